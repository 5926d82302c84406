"""``tokensift bench kv``: tasks x methods x ratios on one model, one resumable row per sample.

Prefill compression does not change the hidden states of the prefill itself, so one full prefill per
sample and mode serves every method and ratio: the layer inputs are captured once, each press scores
them once per method (scores do not depend on the ratio) and selects per ratio, and every variant
(plus the uncompressed one) becomes one row of a single masked batch cache. Question, answer and
continuation are then run for all variants at once. Decode speed is measured separately, batch 1, on
one long sample (``decode_speed`` rows).
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from tokensift.bench import RowStore, write_report
from tokensift.kv.attach import CompressionStats, attached, build_press
from tokensift.kv.cache import MaskedLayer, RaggedLayer, tensor_bytes
from tokensift.kv.press import LayerView, Press, Selection
from tokensift.kv.probe import probe_views
from tokensift.kv.qa import CompressedContext, answer, continue_from
from tokensift.kv.tasks import Sample, build, split_prompt, string_match

MODES = ("query-agnostic", "query-aware")
QUALITY = {
    "niah": "correct",
    "niah_multikey": "correct",
    "niah_multivalue": "recall",
    "kv_retrieval": "correct",
    "nq_qa": "correct",
    "fidelity": "top1_agreement",
}
COST = ("kept_fraction", "cache_bytes", "prefill_s", "scoring_s")


@dataclass
class BenchConfig:
    """One ``tokensift bench kv`` run."""

    model: str
    tasks: list[str]
    methods: list[str]
    ratios: list[float]
    samples: int
    seed: int
    out: Path
    data: Path
    length: int = 1024
    modes: tuple[str, ...] = MODES
    fidelity_samples: int | None = None
    speed_length: int = 2048
    speed_tokens: int = 16


class _AllQueries(Press):
    query_rows = None


@dataclass
class _Capture:
    """A policy that only records each layer's view of the prefill (no compression)."""

    press: Press = field(default_factory=_AllQueries)
    views: dict[int, LayerView] = field(default_factory=dict)

    def prefill(self, views: list[LayerView], keys: Tensor, values: Tensor, starts: list[int]) -> None:
        self.views[views[0].layer] = views[0]


@dataclass
class Prefill:
    """One sample's full prefill: per-layer views, the cache it filled, its time and last logits."""

    views: dict[int, LayerView]
    cache: Any
    seconds: float
    logits: Tensor
    ids: list[int]

    @property
    def length(self) -> int:
        return len(self.ids)


@torch.no_grad()
def prefill(model: torch.nn.Module, ids: list[int]) -> Prefill:
    """Run the model once over ``ids`` and keep what every press needs."""
    capture = _Capture()
    config: Any = model.config
    cache = DynamicCache(config=config)
    with attached(model, capture):
        started = time.perf_counter()
        logits = model(torch.tensor([ids]), past_key_values=cache, use_cache=True).logits[:, -1]
        seconds = time.perf_counter() - started
    return Prefill(capture.views, cache, seconds, logits, list(ids))


@dataclass
class Variant:
    """One method at one ratio: its kept positions per layer and how long choosing them took."""

    method: str
    ratio: float
    selection: dict[int, Selection]
    scoring_s: float


def variants(
    pre: Prefill,
    methods: list[str],
    ratios: list[float],
    wanted: Callable[[str, float], bool],
    *,
    model: torch.nn.Module | None = None,
    tokenizer: Any = None,
) -> Iterator[Variant]:
    """Score once per method, select per ratio; only the (method, ratio) pairs ``wanted``.

    A press that needs probe passes (KVzip) gets them here, run once by ``model`` on the prefill's cache;
    their time counts as that method's scoring time.
    """
    for method in methods:
        todo = [r for r in ratios if wanted(method, r)]
        if not todo:
            continue
        scorer = build_press(method, ratio=todo[0], tokenizer=tokenizer)
        started = time.perf_counter()
        if scorer.needs_probe:
            if model is None:
                raise ValueError(f"{method} needs probe passes: call variants(..., model=...)")
            probe_views(model, scorer, pre.views, pre.ids)
        scores = {layer: scorer.score(view) for layer, view in sorted(pre.views.items())}
        scored = time.perf_counter() - started
        for view in pre.views.values():
            view.probes = []
        for ratio in todo:
            press = build_press(method, ratio=ratio, tokenizer=tokenizer)
            started = time.perf_counter()
            chosen = press.select_layers(pre.views, scores)
            yield Variant(method, ratio, chosen, scored + time.perf_counter() - started)


def full_variant(pre: Prefill) -> Variant:
    return Variant("full", 0.0, {i: [torch.arange(v.n)] * v.kv_heads for i, v in pre.views.items()}, 0.0)


def batch_context(pre: Prefill, rows: list[Variant], extra: int = 64) -> CompressedContext:
    """A cache whose batch row ``i`` holds variant ``i`` as a :class:`MaskedLayer` (layers no press touches are
    repeated as they are). Masking gives the same attention as the ragged layout; row bytes are counted as
    that layout stores them (:func:`row_bytes`)."""
    cache = DynamicCache()
    layers: list[Any] = []
    for idx, layer in enumerate(pre.cache.layers):
        view = pre.views.get(idx)
        if view is None:
            repeated = copy.copy(layer)
            repeated.batch_repeat_interleave(len(rows))
            layers.append(repeated)
            continue
        valid = torch.zeros(len(rows), view.kv_heads, view.n, dtype=torch.bool)
        for b, variant in enumerate(rows):
            for h, kept in enumerate(variant.selection[idx]):
                valid[b, h, kept] = True
        expand = (len(rows), -1, -1, -1)
        layers.append(MaskedLayer(view.keys.expand(*expand), view.values.expand(*expand), valid, extra))
    cache.layers = layers
    return CompressedContext(cache, pre.length, CompressionStats(), pre.seconds, pre.logits)


def ragged_context(pre: Prefill, variant: Variant) -> CompressedContext:
    """One variant as the real compressed cache (:class:`RaggedLayer` per compressed layer), batch 1."""
    cache = DynamicCache()
    cache.layers = [
        RaggedLayer.from_selection(pre.views[idx].keys, pre.views[idx].values, [variant.selection[idx]])
        if idx in pre.views
        else copy.copy(layer)
        for idx, layer in enumerate(pre.cache.layers)
    ]
    return CompressedContext(cache, pre.length, CompressionStats(), pre.seconds, pre.logits)


def row_bytes(context: CompressedContext, row: int) -> int:
    """Bytes row ``row`` holds: kept tokens x head dim x element size for keys and values, i.e. exactly
    what :class:`RaggedLayer` stores for it (dense layers: their share of the storage)."""
    total = 0
    for layer in context.cache.layers:
        if isinstance(layer, MaskedLayer):
            kept = int(layer.lengths()[row].sum())
            total += kept * (layer.keys.shape[-1] + layer.values.shape[-1]) * layer.keys.element_size()
        elif isinstance(layer, RaggedLayer):
            total += layer.nbytes() // layer.keys.shape[0]
        else:
            total += (tensor_bytes(layer.keys) + tensor_bytes(layer.values)) // layer.keys.shape[0]
    return total


def _logprob(model: torch.nn.Module, context: CompressedContext, tail: list[int], gold: list[int]) -> list[float]:
    """log p(gold | context, tail) for every row of a batch context."""
    rows = context.cache.layers[0].keys.shape[0]
    ids = torch.tensor([tail + gold]).expand(rows, -1)
    logits = continue_from(model, context, ids)[:, len(tail) - 1 : -1].float().log_softmax(-1)
    return logits.gather(-1, torch.tensor(gold)[None, :, None].expand(rows, -1, 1)).sum((1, 2)).tolist()


def _fidelity(model: torch.nn.Module, context: CompressedContext, continuation: list[int]) -> list[dict[str, float]]:
    """KL to row 0 (full cache), top-1 agreement and perplexity over the continuation, per row."""
    rows = context.cache.layers[0].keys.shape[0]
    ids = torch.tensor([continuation[:-1]]).expand(rows, -1)
    logp = continue_from(model, context, ids).float().log_softmax(-1)  # predicts continuation[1:]
    target = torch.tensor(continuation[1:])
    reference = logp[0]
    results = []
    for b in range(rows):
        kl = (reference.exp() * (reference - logp[b])).sum(-1).mean()
        agree = (logp[b].argmax(-1) == reference.argmax(-1)).float().mean()
        nll = -logp[b].gather(-1, target[:, None]).mean()
        results.append({"kl": float(kl), "top1_agreement": float(agree), "perplexity": float(nll.exp())})
    return results


VariantSource = Callable[[Prefill, list[str], list[float], Callable[[str, float], bool]], Iterator[Variant]]


def run_sample(
    model: torch.nn.Module,
    tokenizer: Any,
    sample: Sample,
    mode: str,
    config: BenchConfig,
    store: RowStore,
    base: dict,
    source: VariantSource | None = None,
) -> int:
    """All variants of one sample in one mode; returns the number of rows written.

    ``source`` turns the prefill into the variants (ours by default; the kvpress peer passes its presses').
    """
    if source is None:
        source = functools.partial(variants, model=model, tokenizer=tokenizer)

    def key(method: str, ratio: float) -> dict[str, Any]:
        return {
            **base,
            "task": sample.task,
            "mode": mode,
            "method": method,
            "ratio": ratio,
            "sample_id": sample.sample_id,
        }

    todo = [(m, r) for m in config.methods for r in config.ratios if not store.has(**key(m, r))]
    if not todo and store.has(**key("full", 0.0)):
        return 0
    head, tail = split_prompt(tokenizer, sample, mode == "query-aware")
    pre = prefill(model, head)
    rows = [full_variant(pre), *source(pre, config.methods, config.ratios, lambda m, r: (m, r) in todo)]
    context = batch_context(pre, rows)
    extra: list[dict[str, Any]] = [{} for _ in rows]
    if sample.task == "fidelity":
        extra = list(_fidelity(model, context, tail))
    else:
        stop = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        result = answer(
            model,
            context,
            torch.tensor([tail]).expand(len(rows), -1),
            max_new_tokens=sample.max_new_tokens,
            stop_ids=stop,
        )
        gold = tokenizer(" " + sample.answers[0], add_special_tokens=False).input_ids
        logprobs = _logprob(model, context, tail, gold) if sample.task == "nq_qa" else [None] * len(rows)
        for b in range(len(rows)):
            output = tokenizer.decode(result.ids[b], skip_special_tokens=True)
            correct, recall = string_match(output, sample)
            extra[b] = {"correct": correct, "recall": recall, "output": output.strip(), "gold_logprob": logprobs[b]}
    full_bytes = row_bytes(context, 0)
    written = 0
    for b, variant in enumerate(rows):
        if store.has(**key(variant.method, variant.ratio)):
            continue
        cache_bytes = row_bytes(context, b)
        store.append(
            {
                **key(variant.method, variant.ratio),
                "kept_fraction": cache_bytes / full_bytes,
                "cache_bytes": cache_bytes,
                "full_cache_bytes": full_bytes,
                "context_tokens": len(head),
                "tail_tokens": len(tail),
                "prefill_s": pre.seconds,
                "scoring_s": variant.scoring_s,
                **sample.meta,
                **extra[b],
            }
        )
        written += 1
    return written


def decode_speed(model: torch.nn.Module, tokenizer: Any, config: BenchConfig, store: RowStore, base: dict) -> None:
    """Decode time per token, batch 1, at ``speed_length`` context: full cache vs every method at every ratio."""
    sample = build("niah", config.data, tokenizer, 0, config.seed, config.speed_length)

    def key(method: str, ratio: float) -> dict[str, Any]:
        return {
            **base,
            "task": "decode_speed",
            "mode": "-",
            "method": method,
            "ratio": ratio,
            "sample_id": sample.sample_id,
        }

    if store.has(**key("full", 0.0)) and all(store.has(**key(m, r)) for m in config.methods for r in config.ratios):
        return
    head, tail = split_prompt(tokenizer, sample, False)
    pre = prefill(model, head)

    def measure(method: str, ratio: float, context: CompressedContext) -> None:
        result = answer(model, context, torch.tensor([tail]), max_new_tokens=config.speed_tokens)
        store.append(
            {
                **key(method, ratio),
                "context_tokens": len(head),
                "cache_bytes": row_bytes(context, 0),
                "decode_s_per_token": result.decode_seconds_per_token,
                "decoded_tokens": int(result.ids.shape[1]),
            }
        )

    if not store.has(**key("full", 0.0)):
        measure("full", 0.0, CompressedContext(pre.cache, pre.length, CompressionStats(), pre.seconds, pre.logits))
    todo = variants(
        pre,
        config.methods,
        config.ratios,
        lambda m, r: not store.has(**key(m, r)),
        model=model,
        tokenizer=tokenizer,
    )
    for v in todo:
        measure(v.method, v.ratio, ragged_context(pre, v))  # one compressed cache alive at a time


def plan(config: BenchConfig) -> list[tuple[str, int, str]]:
    """(task, index, mode) work items in run order: sample-major so partial runs cover every method."""
    items = []
    count = max(config.samples, config.fidelity_samples or 0)
    for index in range(count):
        for task in config.tasks:
            limit = config.fidelity_samples if task == "fidelity" and config.fidelity_samples else config.samples
            modes = ("query-agnostic",) if task == "fidelity" else config.modes
            items += [(task, index, mode) for mode in modes if index < limit]
    return items


def run_bench(
    config: BenchConfig, model: torch.nn.Module, tokenizer: Any, progress: Callable[[str, int], None]
) -> RowStore:
    """Run (or resume) the whole grid; ``progress(description, done)`` is called before each work item."""
    store = RowStore(config.out)
    base = {"system": "tokensift", "target": "kv", "model": config.model}
    if config.speed_tokens:
        progress(f"decode speed at {config.speed_length} tokens", 0)
        decode_speed(model, tokenizer, config, store, base)
    start = 1 if config.speed_tokens else 0
    for done, (task, index, mode) in enumerate(plan(config), start):
        progress(f"{task} #{index} {mode}", done)
        sample = build(task, config.data, tokenizer, index, config.seed, config.length)
        run_sample(model, tokenizer, sample, mode, config, store, base)
    return store


def write_kv_report(config: BenchConfig, rows: list[dict[str, Any]], extra_notes: tuple[str, ...] = ()) -> Path:
    """Summary CSV, plots and ``report.md`` for a KV benchmark folder (rows of every system)."""
    tasks = sorted({r["task"] for r in rows if r["task"] in QUALITY}, key=list(QUALITY).index)
    command = (
        f"tokensift bench kv --model {config.model} --tasks {','.join(config.tasks)} "
        f"--methods {','.join(config.methods)} --ratios {','.join(f'{r:g}' for r in config.ratios)} "
        f"--samples {config.samples} --seed {config.seed} "
        f"--length {config.length} --out {config.out}"
    )
    notes = (
        "ratio = fraction of the context's KV cache removed (kvpress convention); kept_fraction = measured cache "
        "bytes of the variant / bytes of the full cache",
        "method `full` = the uncompressed cache (baseline); system `kvpress` = kvpress 0.5.5 presses on the same "
        "task instances (benchmarks/peers/kvpress)",
        "query-agnostic: only the context is compressed, the question comes after; query-aware: context and "
        "question are compressed together",
        *extra_notes,
    )
    return write_report(
        config.out,
        rows,
        title=f"KV-cache compression · {config.model}",
        command=command,
        quality={t: QUALITY[t] for t in tasks},
        cost=(*COST, "kl", "perplexity", "gold_logprob"),
        notes=notes,
    )
