"""Server metrics in Prometheus' text format: counters, gauges and latency histograms, thread-safe.

No client library: the exposition format is a few lines of text, and the engine thread and the web
side both update the same registry.
"""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Histogram bucket bounds in seconds."""

HELP = {
    "tokensift_requests_total": "HTTP requests by endpoint and status code.",
    "tokensift_rejected_total": "Requests refused because the queue was full (429).",
    "tokensift_cancelled_total": "Requests whose client went away before they finished.",
    "tokensift_prompt_tokens_total": "Prompt tokens prefilled (after prompt compression).",
    "tokensift_generated_tokens_total": "Tokens generated.",
    "tokensift_decode_steps_total": "Batched decoding steps.",
    "tokensift_decode_rows_total": "Request rows decoded, summed over steps (rows / steps = mean batch).",
    "tokensift_contexts_created_total": "Contexts prefilled, compressed and stored.",
    "tokensift_queue_depth": "Requests waiting to be admitted.",
    "tokensift_running_requests": "Requests in the decoding batch.",
    "tokensift_batch_bytes": "Bytes of the decoding batch's padded KV storage.",
    "tokensift_context_cache_bytes": "Bytes of compressed context caches held in memory.",
    "tokensift_context_cache_limit_bytes": "The memory cap for context caches.",
    "tokensift_context_store_bytes": "Bytes of context files on disk.",
    "tokensift_contexts_in_memory": "Contexts held in memory.",
    "tokensift_contexts_stored": "Contexts in the store (memory or disk).",
    "tokensift_context_loads_total": "Contexts read back from disk.",
    "tokensift_time_to_first_token_seconds": "From a request's arrival to its first generated token.",
    "tokensift_request_seconds": "From a request's arrival to its last token.",
    "tokensift_context_seconds": "Prefill and compression time of a new context.",
}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """A tiny thread-safe registry; :meth:`render` gives the Prometheus text."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.gauges: dict[str, float] = {}
        self.histograms: dict[str, list[float]] = {}
        """name -> per-bucket counts (+Inf last), then sum and count."""

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self.lock:
            self.counters[(name, tuple(sorted(labels.items())))] += value

    def set(self, name: str, value: float) -> None:
        with self.lock:
            self.gauges[name] = float(value)

    def observe(self, name: str, seconds: float) -> None:
        with self.lock:
            counts = self.histograms.setdefault(name, [0.0] * (len(BUCKETS) + 3))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[len(BUCKETS)] += 1  # +Inf
            counts[-2] += seconds
            counts[-1] += 1

    def value(self, name: str, **labels: str) -> float:
        """A counter's value (0 when never incremented), or a gauge's."""
        with self.lock:
            if name in self.gauges:
                return self.gauges[name]
            if labels:
                return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)
            return sum(v for (n, _), v in self.counters.items() if n == name)

    def render(self) -> str:
        lines: list[str] = []
        with self.lock:
            counters = sorted(self.counters.items())
            gauges = sorted(self.gauges.items())
            histograms = sorted((k, list(v)) for k, v in self.histograms.items())
        seen: set[str] = set()
        for (name, labels), value in counters:
            if name not in seen:
                seen.add(name)
                lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} counter"]
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")
        for name, value in gauges:
            lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
        for name, counts in histograms:
            lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} histogram"]
            for bound, count in zip(BUCKETS, counts, strict=False):
                lines.append(f'{name}_bucket{{le="{bound:g}"}} {_number(count)}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {_number(counts[len(BUCKETS)])}')
            lines += [f"{name}_sum {_number(counts[-2])}", f"{name}_count {_number(counts[-1])}"]
        return "\n".join(lines) + "\n"
