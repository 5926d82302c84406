"""A bounded load test against a running server with the official ``openai`` client.

``clients`` threads each send streamed chat requests (taken in turn from ``requests``) until ``seconds``
have passed, then finish what they started. Every answer can be checked against the answer the same
request got when served alone (``expected``), so batching can be shown not to lose or mix requests.
Reports throughput (generated tokens per second of wall time), latency and time to first token.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Outcome:
    """One request as the client saw it."""

    key: str
    answer: str
    tokens: int
    seconds: float
    first_token_seconds: float
    error: str | None = None


@dataclass
class LoadReport:
    clients: int
    seconds: float
    wall_seconds: float
    requests: int
    errors: int
    mismatches: int
    unchecked: int
    tokens: int
    tokens_per_second: float
    latency_p50: float
    latency_p95: float
    ttft_p50: float
    ttft_p95: float
    outcomes: list[Outcome] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("outcomes")
        return data


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ask(client: Any, model: str, body: dict[str, Any]) -> tuple[str, int, float, float]:
    """(answer, completion tokens, seconds, seconds to the first content) of one streamed chat request."""
    started = time.perf_counter()
    first = None
    pieces = []
    tokens = 0
    extra = {"tokensift": body["tokensift"]} if "tokensift" in body else None
    stream = client.chat.completions.create(
        model=model,
        messages=body["messages"],
        max_tokens=body.get("max_tokens", 32),
        temperature=body.get("temperature", 0.0),
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra,
    )
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                if first is None:
                    first = time.perf_counter() - started
                pieces.append(choice.delta.content)
    seconds = time.perf_counter() - started
    return "".join(pieces), tokens, seconds, first if first is not None else seconds


def load_test(
    base_url: str,
    model: str,
    requests: dict[str, dict[str, Any]],
    *,
    clients: int,
    seconds: float,
    expected: dict[str, str] | None = None,
) -> LoadReport:
    """Run ``clients`` concurrent clients for ``seconds`` over ``requests`` (key -> chat body); each client
    sends at least one request, and none is started after ``seconds``."""
    import openai

    keys = list(requests)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client_loop(index: int) -> None:
        client = openai.OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="none", max_retries=0, timeout=600)
        turn = index
        while turn == index or time.perf_counter() < deadline:  # every client sends at least one request
            key = keys[turn % len(keys)]
            turn += clients
            try:
                answer, tokens, spent, first = ask(client, model, requests[key])
                outcome = Outcome(key, answer, tokens, spent, first)
            except Exception as exc:  # counted and reported, the load goes on
                outcome = Outcome(key, "", 0, 0.0, 0.0, f"{type(exc).__name__}: {exc}")
            with lock:
                outcomes.append(outcome)

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    good = [o for o in outcomes if o.error is None]
    checked = [o for o in good if expected is not None and o.key in expected]
    mismatches = sum(1 for o in checked if expected is not None and o.answer != expected[o.key])
    tokens = sum(o.tokens for o in good)
    return LoadReport(
        clients=clients,
        seconds=seconds,
        wall_seconds=wall,
        requests=len(outcomes),
        errors=len(outcomes) - len(good),
        mismatches=mismatches,
        unchecked=len(good) - len(checked),
        tokens=tokens,
        tokens_per_second=tokens / wall if wall else 0.0,
        latency_p50=_percentile([o.seconds for o in good], 0.5),
        latency_p95=_percentile([o.seconds for o in good], 0.95),
        ttft_p50=_percentile([o.first_token_seconds for o in good], 0.5),
        ttft_p95=_percentile([o.first_token_seconds for o in good], 0.95),
        outcomes=outcomes,
    )
