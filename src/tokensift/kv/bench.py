"""``tokensift bench kv``: the KV target's tasks and metrics on the shared benchmark skeleton.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor
from transformers import DynamicCache

from tokensift.bench import FULL, BenchConfig, Benchmark, RowStore, WorkItem
from tokensift.bench.data import data_file
from tokensift.errors import ParameterError
from tokensift.inputs import whole_number
from tokensift.kv.api import press_from
from tokensift.kv.attach import CompressionStats, attached, probe_views
from tokensift.kv.cache import MaskedLayer, RaggedLayer, tensor_bytes
from tokensift.kv.model import device_of
from tokensift.kv.qa import CompressedContext, answer, cache_rows, continue_from
from tokensift.kv.tasks import Sample, build, split_prompt, string_match
from tokensift.kv.view import LayerView, Selection

MODES = ("query-agnostic", "query-aware")
QUALITY = {
    "niah": "correct",
    "niah_multikey": "correct",
    "niah_multivalue": "recall",
    "kv_retrieval": "correct",
    "nq_qa": "correct",
    "fidelity": "top1_agreement",
    "passkey": "correct",
}
COST = ("kept_fraction", "cache_bytes", "prefill_s", "scoring_s")


@dataclass
class KVBenchConfig(BenchConfig):
    """``tokensift bench kv``: the shared fields plus context length, modes and the decode-speed cell."""

    length: int = 1024
    """Context tokens for niah and fidelity."""
    modes: tuple[str, ...] = MODES
    fidelity_samples: int | None = None
    """Samples for fidelity (default: ``samples``)."""
    speed_length: int = 2048
    speed_tokens: int = 16
    """Tokens decoded per decode-speed cell at ``speed_length`` context (0: skip)."""
    budget: str = "tokens"
    """What ``ratios`` remove: ``tokens`` (of the context's cache) or ``bytes`` (of the full cache's bytes, so
    eviction, low-precision storage and merging meet at the same memory)."""
    bits: int | None = None
    """Low precision of the methods that pack tokens (the ``quant`` reducer and its kin; default theirs)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Method options (``--option key=value``), given to every method that accepts them (rows keep the method's
    name, so run each set of options into its own ``--out``)."""


@dataclass
class _Capture:
    """A policy that only records each layer's view of the prefill, every query row (no compression)."""

    views: dict[int, LayerView] = field(default_factory=dict)
    query_rows: int | None = None
    needs_probe: bool = False
    needs_hidden: bool = False
    model_wide: bool = False
    press: None = None

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
def prefill(model: torch.nn.Module, ids: list[int], *, hidden: bool = False) -> Prefill:
    """Run the model once over ``ids`` and keep what every press needs (each layer's input hidden states too
    with ``hidden``, for a press that reads them)."""
    capture = _Capture(needs_hidden=hidden)
    config: Any = model.config
    cache = DynamicCache(config=config)
    with attached(model, capture):
        started = time.perf_counter()
        inputs = torch.tensor([ids], device=device_of(model))
        logits = model(inputs, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        seconds = time.perf_counter() - started
    return Prefill(capture.views, cache, seconds, logits, list(ids))


def reads_hidden(methods: Sequence[str], tokenizer: Any = None) -> bool:
    """Whether any of ``methods`` scores from the layers' input hidden states (so the prefill must keep them)."""
    return any(press_from(m, ratio=0.5, tokenizer=tokenizer).scorer.needs_hidden for m in methods)


@dataclass
class Variant:
    """One method at one ratio: its kept positions per layer and how long choosing them took; for a method
    that packs or merges what it does not keep, the layers it ``built`` (what the row's cache really holds)."""

    method: str
    ratio: float
    selection: dict[int, Selection]
    scoring_s: float
    built: dict[int, RaggedLayer] | None = None
    token_ratio: float | None = None
    """With a bytes budget: the fraction of tokens the method's selection removed to meet it."""


BUDGETS = ("tokens", "bytes")


def token_ratio(press: Any, ratio: float, budget: str, view: LayerView) -> float | None:
    """The token ratio that makes ``press`` remove ``ratio`` of the cache's ``budget`` (None: out of its reach)."""
    if budget == "tokens":
        return ratio
    keep = press.keep_for_bytes(1.0 - ratio, int(view.keys.shape[-1]), view.keys.element_size())
    return None if keep is None else max(0.0, 1.0 - keep)


def variants(
    pre: Prefill,
    methods: list[str],
    ratios: list[float],
    wanted: Callable[[str, float], bool],
    *,
    model: torch.nn.Module | None = None,
    tokenizer: Any = None,
    options: dict[str, Any] | None = None,
    budget: str = "tokens",
) -> Iterator[Variant]:
    """Score once per method, select per ratio; only the (method, ratio) pairs ``wanted``.

    A press that needs probe passes (KVzip) gets them here, run once by ``model`` on the prefill's cache;
    their time counts as that method's scoring time. ``options`` reach each method that accepts them (a
    surrogate file for ``kvzap``, ``bits`` for the packing ones). With ``budget="bytes"`` a ratio is the
    share of the full cache's bytes removed, turned into each method's token ratio
    (:meth:`~tokensift.kv.press.Press.keep_for_bytes`); a ratio out of a method's reach yields no variant.
    A method that packs or merges builds its layers here (their time counts as scoring).
    """
    from tokensift.methods import accepts

    scored_by: dict[tuple, tuple[dict[int, Tensor], float]] = {}
    """Scores (and the seconds they took) per scorer: compositions over one scorer share them (wrappers and
    reducers never change scores), and each is charged the full scoring time, as if it ran alone."""
    for method in methods:
        todo = [r for r in ratios if wanted(method, r)]
        if not todo:
            continue
        extra = {k: v for k, v in (options or {}).items() if accepts("kv", method, k)}
        first = press_from(method, ratio=todo[0], tokenizer=tokenizer, **extra)  # scores do not depend on the ratio
        signature = scorer_signature(first.scorer)
        if signature not in scored_by:
            started = time.perf_counter()
            if first.scorer.needs_probe:
                if model is None:
                    raise ValueError(f"{method} needs probe passes: call variants(..., model=...)")
                probe_views(model, first, pre.views, pre.ids)
            found = {layer: first.score(view) for layer, view in sorted(pre.views.items())}
            scored_by[signature] = (found, time.perf_counter() - started)
            for view in pre.views.values():
                view.probes, view.probe_scores = [], []
        scores, scored = scored_by[signature]
        any_view = next(iter(pre.views.values()))
        for ratio in todo:
            tokens = token_ratio(first, ratio, budget, any_view)
            if tokens is None:
                continue
            press = press_from(method, ratio=tokens, tokenizer=tokenizer, **extra)
            started = time.perf_counter()
            chosen = press.select_layers(pre.views, scores)
            built = None
            if not press.evicts:
                built = {i: press.build(v.keys, v.values, [chosen[i]], [v], [0]) for i, v in pre.views.items()}
            seconds = scored + time.perf_counter() - started
            yield Variant(method, ratio, chosen, seconds, built, tokens if budget == "bytes" else None)


def scorer_signature(scorer: Any) -> tuple:
    """What a scorer's scores depend on: its class and options, not its budget."""
    import dataclasses

    from tokensift.registry import BUDGET_FIELDS

    fields = [(f.name, getattr(scorer, f.name)) for f in dataclasses.fields(scorer) if f.name not in BUDGET_FIELDS]
    return (type(scorer), *((name, value if _hashable(value) else id(value)) for name, value in fields))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def full_variant(pre: Prefill) -> Variant:
    return Variant(FULL, 0.0, {i: [torch.arange(v.n)] * v.kv_heads for i, v in pre.views.items()}, 0.0)


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
        masked = MaskedLayer(view.keys.expand(*expand), view.values.expand(*expand), valid, extra)
        for b, variant in enumerate(rows):
            if variant.built is not None:
                masked.place(b, variant.built[idx])
        layers.append(masked)
    cache.layers = layers
    return CompressedContext(cache, pre.length, CompressionStats(), pre.seconds, pre.logits)


def ragged_context(pre: Prefill, variant: Variant) -> CompressedContext:
    """One variant as the real compressed cache (:class:`RaggedLayer` per compressed layer), batch 1."""
    cache = DynamicCache()
    cache.layers = [
        (
            variant.built[idx]
            if variant.built is not None
            else RaggedLayer.from_selection(pre.views[idx].keys, pre.views[idx].values, [variant.selection[idx]])
        )
        if idx in pre.views
        else copy.copy(layer)
        for idx, layer in enumerate(pre.cache.layers)
    ]
    return CompressedContext(cache, pre.length, CompressionStats(), pre.seconds, pre.logits)


def row_bytes(context: CompressedContext, row: int, built: dict[int, RaggedLayer] | None = None) -> int:
    """Bytes row ``row`` holds: kept tokens x head dim x element size for keys and values, i.e. exactly
    what :class:`RaggedLayer` stores for it (dense layers: their share of the storage); the layers a packing
    or merging method ``built`` count what they store."""
    total = 0
    for idx, layer in enumerate(context.cache.layers):
        if built is not None and idx in built:
            total += built[idx].nbytes()
        elif isinstance(layer, MaskedLayer):
            kept = int(layer.lengths()[row].sum())
            total += kept * (layer.keys.shape[-1] + layer.values.shape[-1]) * layer.keys.element_size()
        elif isinstance(layer, RaggedLayer):
            total += layer.nbytes() // layer.keys.shape[0]
        else:
            total += (tensor_bytes(layer.keys) + tensor_bytes(layer.values)) // layer.keys.shape[0]
    return total


def _logprob(model: torch.nn.Module, context: CompressedContext, tail: list[int], gold: list[int]) -> list[float]:
    """log p(gold | context, tail) for every row of a batch context."""
    rows = cache_rows(context.cache)
    ids = torch.tensor([tail + gold], device=device_of(model)).expand(rows, -1)
    logits = continue_from(model, context, ids)[:, len(tail) - 1 : -1].float().log_softmax(-1)
    index = torch.tensor(gold, device=logits.device)[None, :, None].expand(rows, -1, 1)
    return logits.gather(-1, index).sum((1, 2)).tolist()


def _fidelity(model: torch.nn.Module, context: CompressedContext, continuation: list[int]) -> list[dict[str, float]]:
    """KL to row 0 (full cache), top-1 agreement and perplexity over the continuation, per row."""
    rows = context.cache.layers[0].keys.shape[0]
    ids = torch.tensor([continuation[:-1]], device=device_of(model)).expand(rows, -1)
    logp = continue_from(model, context, ids).float().log_softmax(-1)  # predicts continuation[1:]
    target = torch.tensor(continuation[1:], device=logp.device)
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
    methods: Sequence[str],
    ratios: Sequence[float],
    store: RowStore,
    base: dict[str, Any],
    source: VariantSource | None = None,
    *,
    budget: str = "tokens",
    options: dict[str, Any] | None = None,
) -> int:
    """All variants of one sample in one mode; returns the number of rows written.

    ``base`` holds the row's ``system``, ``target`` and ``model``; ``source`` turns the prefill into the
    variants (ours by default; the kvpress peer passes its presses').
    """
    if source is None:
        source = functools.partial(variants, model=model, tokenizer=tokenizer, budget=budget, options=options)

    def key(method: str, ratio: float) -> dict[str, Any]:
        return {
            **base,
            "task": sample.task,
            "mode": mode,
            "method": method,
            "ratio": ratio,
            "sample_id": sample.sample_id,
        }

    todo = [(m, r) for m in methods for r in ratios if not store.has(**key(m, r))]
    if not todo and store.has(**key(FULL, 0.0)):
        return 0
    head, tail = split_prompt(tokenizer, sample, mode == "query-aware")
    pre = prefill(model, head, hidden=reads_hidden(methods, tokenizer))
    rows = [full_variant(pre), *source(pre, list(methods), list(ratios), lambda m, r: (m, r) in todo)]
    context = batch_context(pre, rows)
    extra: list[dict[str, Any]] = [{} for _ in rows]
    if sample.task == "fidelity":
        extra = list(_fidelity(model, context, tail))
    else:
        stop = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        result = answer(
            model,
            context,
            torch.tensor([tail], device=device_of(model)).expand(len(rows), -1),
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
        cache_bytes = row_bytes(context, b, variant.built)
        store.append(
            {
                **key(variant.method, variant.ratio),
                "budget": budget,
                "token_ratio": variant.ratio if variant.token_ratio is None else variant.token_ratio,
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


def work(
    tasks: Sequence[str], modes: Sequence[str], samples: int, fidelity_samples: int | None = None
) -> list[tuple[str, int, str]]:
    """(task, index, mode) work items in run order: sample-major so partial runs cover every method."""
    items = []
    count = max(samples, fidelity_samples or 0)
    for index in range(count):
        for task in tasks:
            limit = fidelity_samples if task == "fidelity" and fidelity_samples else samples
            task_modes = ("query-agnostic",) if task == "fidelity" else modes
            items += [(task, index, mode) for mode in task_modes if index < limit]
    return items


class KVBenchmark(Benchmark):
    """Prefill compression on needle, retrieval, QA and fidelity tasks, both modes, plus decode speed.

    Prefill compression does not change the hidden states of the prefill itself, so one full prefill per
    sample and mode serves every method and ratio (see :func:`run_sample`).
    """

    target = "kv"
    heading = "KV-cache compression"
    config_class = KVBenchConfig
    quality = QUALITY
    cost = (*COST, "kl", "perplexity", "gold_logprob")
    needs: ClassVar[dict[str, tuple[str, ...]]] = {
        "niah": ("pg_essays",),
        "niah_multikey": ("pg_essays",),
        "niah_multivalue": ("pg_essays",),
        "kv_retrieval": ("lost_in_the_middle/kv-retrieval-75_keys.jsonl.gz",),
        "nq_qa": ("lost_in_the_middle/nq-open-oracle.jsonl.gz",),
        "fidelity": ("wikitext2/wiki.test.raw",),
    }
    default_model = "smollm2-135m"
    default_tasks = ("niah", "niah_multikey", "nq_qa", "fidelity")
    default_ratios = (0.5, 0.75, 0.875)
    default_samples = 30
    config: KVBenchConfig

    def registered(self) -> list[str]:
        """The cache methods: prefill filters and decoding policies do not share one prefill (see check)."""
        from tokensift.methods import names

        return names("kv", stage="cache")

    def check(self) -> None:
        super().check()
        from tokensift.methods import parse

        for method in self.methods:
            stage = getattr(parse("kv", method)[-1].cls, "stage", "cache")
            if stage != "cache":
                raise ParameterError(
                    f"{method} changes the {stage}, so it cannot share the one prefill bench kv gives every method; "
                    "measure it with benchmarks/kv_long.py or `tokensift kv generate`",
                    option="methods",
                )
        if self.config.budget not in BUDGETS:
            raise ParameterError(
                f"--budget must be one of {', '.join(BUDGETS)}, got {self.config.budget!r}", option="budget"
            )
        if self.config.bits is not None:
            from tokensift.reduce.quantize import check_bits

            check_bits(self.config.bits)
        if self.config.options:
            from tokensift.methods import accepts

            for key in self.config.options:
                if not any(accepts("kv", method, key) for method in self.methods):
                    raise ParameterError(f"no method of this run takes the option {key!r}", option="option")
            for method in self.methods:  # each value checked by the method itself (a typed error, not torch's)
                press_from(
                    method,
                    ratio=0.5,
                    **{k: v for k, v in self.config.options.items() if accepts("kv", method, k)},
                )
        wrong = [m for m in self.config.modes if m not in MODES]
        if wrong or not self.config.modes:
            raise ParameterError(f"--modes must be among {', '.join(MODES)}, got {','.join(wrong)}", option="modes")
        for name in ("length", "speed_length"):
            whole_number(getattr(self.config, name), name, low=16)
        for name in ("speed_tokens", "fidelity_samples"):
            if getattr(self.config, name) is not None:
                whole_number(getattr(self.config, name), name, low=0)

    def __init__(self, config: KVBenchConfig) -> None:
        super().__init__(config)
        if self.data is not None and config.speed_tokens:
            data_file(self.data, "pg_essays")  # the decode-speed sample is a needle in the essays

    def setup(self) -> None:
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        self.base = {"system": "tokensift", "target": self.target, "model": self.model_name}

    def plan(self) -> list[WorkItem]:
        speed = [WorkItem(f"decode speed at {self.config.speed_length} tokens", ("speed",))]
        samples = work(self.tasks, self.config.modes, self.samples, self.config.fidelity_samples)
        return (speed if self.config.speed_tokens else []) + [
            WorkItem(f"{t} #{i} {m}", (t, i, m)) for t, i, m in samples
        ]

    def run_item(self, item: WorkItem) -> None:
        if item.args == ("speed",):
            decode_speed(self, self.config.speed_length, self.config.speed_tokens)
            return
        task, index, mode = item.args
        assert self.data is not None
        sample = build(task, self.data, self.tokenizer, index, self.config.seed, self.config.length)
        run_sample(
            self.model,
            self.tokenizer,
            sample,
            mode,
            self.methods,
            self.ratios,
            self.store,
            self.base,
            budget=self.config.budget,
            options=self.method_options,
        )

    @property
    def method_options(self) -> dict[str, Any]:
        return {**self.config.options, **({} if self.config.bits is None else {"bits": self.config.bits})}

    def notes(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        return [
            (
                "ratio = fraction of the full cache's bytes removed (--budget bytes: each method's token ratio is "
                "chosen to store that many bytes, packed codes, scales and log masses included); "
                if self.config.budget == "bytes"
                else "ratio = fraction of the context's KV cache removed (kvpress convention); "
            )
            + "kept_fraction = measured cache bytes of the variant / bytes of the full cache",
            "method `full` = the uncompressed cache (baseline); system `kvpress` = kvpress 0.5.5 presses on the same "
            "task instances (benchmarks/peers/kvpress)",
            "query-agnostic: only the context is compressed, the question comes after; query-aware: context and "
            "question are compressed together",
        ] + (
            [
                "method options: "
                + ", ".join(f"{k}={v}" for k, v in sorted(self.config.options.items()))
                + " (given to every method that takes them)"
            ]
            if self.config.options
            else []
        )


def decode_speed(bench: KVBenchmark, length: int, tokens: int) -> None:
    """Decode time per token, batch 1, at ``length`` context: full cache vs every method at every ratio."""
    model, tokenizer = bench.model, bench.tokenizer
    assert bench.data is not None
    sample = build("niah", bench.data, tokenizer, 0, bench.config.seed, length)

    def key(method: str, ratio: float) -> dict[str, Any]:
        return bench.key("decode_speed", "-", method, ratio, sample.sample_id)

    if bench.has(**key(FULL, 0.0)) and all(bench.has(**key(m, r)) for m in bench.methods for r in bench.ratios):
        return
    head, tail = split_prompt(tokenizer, sample, False)
    pre = prefill(model, head, hidden=reads_hidden(bench.methods, tokenizer))

    def measure(method: str, ratio: float, context: CompressedContext) -> None:
        result = answer(model, context, torch.tensor([tail], device=device_of(model)), max_new_tokens=tokens)
        bench.store.append(
            {
                **key(method, ratio),
                "context_tokens": len(head),
                "budget": bench.config.budget,
                "cache_bytes": row_bytes(context, 0),
                "decode_s_per_token": result.decode_seconds_per_token,
                "decoded_tokens": int(result.ids.shape[1]),
            }
        )

    if not bench.has(**key(FULL, 0.0)):
        measure(FULL, 0.0, CompressedContext(pre.cache, pre.length, CompressionStats(), pre.seconds, pre.logits))
    todo = variants(
        pre,
        list(bench.methods),
        list(bench.ratios),
        lambda m, r: not bench.has(**key(m, r)),
        model=model,
        tokenizer=tokenizer,
        options=bench.method_options,
        budget=bench.config.budget,
    )
    for v in todo:
        measure(v.method, v.ratio, ragged_context(pre, v))  # one compressed cache alive at a time
