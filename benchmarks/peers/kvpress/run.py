"""Run kvpress 0.5.5's presses on the very task instances of ``tokensift bench kv`` (run in this folder's .venv).

Usage (after ``bash setup.sh``):

    .venv/bin/python run.py --out ../../out/kv --samples 20 [--equivalence 5]

Each sample is prefilled once; during that forward a hook records what kvpress's own forward hook would
receive for every attention layer (hidden states, position embeddings, the full key/value cache). Each
press then runs its own ``compress(...)`` on those inputs, exactly as in ``with press(model): ...``, and
the positions it kept (evicted keys are found back in the full cache; AdaKV's masked positions are read
from ``module.masked_key_indices``) become one row of tokensift's batched evaluation. So questions,
decoding and scoring are identical for both systems; only the choice of kept tokens is kvpress's. Rows
go to ``rows.jsonl`` in the shared output folder with ``system=kvpress``.

``--equivalence N`` also writes ``equivalence.json``: on N prefills, the share of kept indices on which
tokensift and kvpress agree for snapkv, knorm, streaming_llm, tova and expected_attention (tokensift
configured with kvpress's defaults and kvpress's budget, so only the algorithms are compared).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from kvpress import (
    AdaKVPress,
    ChunkKVPress,
    ExpectedAttentionPress,
    KeyDiffPress,
    KnormPress,
    KVzipPress,
    PyramidKVPress,
    RandomPress,
    SnapKVPress,
    StreamingLLMPress,
    TOVAPress,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from tokensift.bench import RowStore
from tokensift.kv import bench
from tokensift.kv.api import press_from
from tokensift.kv.tasks import build, split_prompt

PRESSES: dict[str, Callable[[float], Any]] = {
    "random": lambda r: RandomPress(compression_ratio=r, seed=0),
    "streaming_llm": lambda r: StreamingLLMPress(compression_ratio=r),
    "tova": lambda r: TOVAPress(compression_ratio=r),
    "snapkv": lambda r: SnapKVPress(compression_ratio=r),
    "pyramidkv": lambda r: PyramidKVPress(compression_ratio=r),
    "knorm": lambda r: KnormPress(compression_ratio=r),
    "keydiff": lambda r: KeyDiffPress(compression_ratio=r),
    "expected_attention": lambda r: ExpectedAttentionPress(compression_ratio=r),
    "chunkkv": lambda r: ChunkKVPress(press=SnapKVPress(compression_ratio=r), chunk_length=20),
    "adakv": lambda r: AdaKVPress(press=SnapKVPress(compression_ratio=r)),
}
"""Our method name -> the matching kvpress press (kvpress's defaults). H2O and A2SF have no kvpress press that
runs without eager attention (ObservedAttentionPress needs the full attention matrix), so they are not run.
KVzip is run separately (:func:`kvzip_selections`): its press works as a context manager around the prefill."""


class _KeptScores(KVzipPress):
    """kvpress's KVzip press, keeping the reconstruction scores it computed (they are reset afterwards)."""

    def compress_post(self, model: Any) -> None:
        self.kept_scores = self.score_val.clone()
        super().compress_post(model)


def kvzip_selections(model: Any, pre: bench.Prefill, ratios: list[float]) -> dict[float, dict[int, list[torch.Tensor]]]:
    """kvpress's KVzip on the sample's prefill ids: one prefill + its repeat passes, then its own global
    selection (``compress_post``) per ratio; the masked positions it writes are read back per layer and head."""
    press = _KeptScores(compression_ratio=ratios[0])
    with torch.no_grad(), press(model):
        model(input_ids=torch.tensor([pre.ids]), past_key_values=DynamicCache())
    found = {}
    for ratio in ratios:
        press.score_val, press.compression_ratio = press.kept_scores.clone(), ratio
        press.compress_post(model)
        found[ratio] = {}
        for idx, view in pre.views.items():
            module = model.model.layers[idx].self_attn
            valid = torch.ones(view.kv_heads, view.n, dtype=torch.bool)
            _, heads, positions = module.masked_key_indices
            valid[heads, positions] = False
            found[ratio][idx] = [row.nonzero().flatten() for row in valid]
            module.masked_key_indices = None
    press.score_val = None
    return found


OURS_AS_KVPRESS = {
    "snapkv": {"window": 64, "kernel": 5},
    "knorm": {},
    "streaming_llm": {},
    "tova": {},
    "expected_attention": {},
}


class Recorder:
    """Forward hooks that keep, per attention layer, what kvpress's forward hook is given."""

    def __init__(self, model: Any) -> None:
        self.layers = list(model.model.layers)
        self.inputs: dict[int, tuple[Any, torch.Tensor, dict]] = {}
        self.handles = []
        for layer in self.layers:
            attention = layer.self_attn
            attention.rotary_emb = model.model.rotary_emb  # what BasePress.__call__ sets up
            self.handles.append(attention.register_forward_hook(self.hook, with_kwargs=True))

    def hook(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        self.inputs[module.layer_idx] = (module, kwargs["hidden_states"], dict(kwargs))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def kept_positions(full: torch.Tensor, kept: torch.Tensor) -> list[torch.Tensor]:
    """Positions of the rows of ``kept [Hkv, k, D]`` in ``full [Hkv, T, D]`` (exact copies), per head."""
    result = []
    for h in range(full.shape[0]):
        where = {row.numpy().tobytes(): i for i, row in enumerate(full[h])}
        result.append(torch.tensor(sorted(where[row.numpy().tobytes()] for row in kept[h])))
    return result


def press_selection(press: Any, recorder: Recorder, pre: bench.Prefill) -> dict[int, list[torch.Tensor]]:
    """Run ``press.compress`` on every layer's recorded inputs; return the kept positions per layer and head."""
    selection = {}
    for idx, view in pre.views.items():
        module, hidden, kwargs = recorder.inputs[idx]
        keys, values = view.keys, view.values
        with torch.no_grad():
            new_keys, _ = press.compress(module, hidden, keys, values, None, kwargs)
        if hasattr(module, "masked_key_indices") and module.masked_key_indices is not None:  # AdaKV masks
            valid = torch.ones(keys.shape[1], keys.shape[2], dtype=torch.bool)
            _, heads, positions = module.masked_key_indices
            valid[heads, positions] = False
            selection[idx] = [row.nonzero().flatten() for row in valid]
            module.masked_key_indices = None
        else:
            selection[idx] = kept_positions(keys[0], new_keys[0])
    return selection


def kvpress_variants(recorder: Recorder, model: Any) -> bench.VariantSource:
    def source(
        pre: bench.Prefill, methods: list[str], ratios: list[float], wanted: Callable[[str, float], bool]
    ) -> Iterator[bench.Variant]:
        for method in methods:
            if method == "kvzip":
                todo = [r for r in ratios if wanted(method, r)]
                if todo:
                    started = time.perf_counter()
                    chosen = kvzip_selections(model, pre, todo)
                    seconds = time.perf_counter() - started
                    yield from (bench.Variant(method, r, chosen[r], seconds) for r in todo)
                continue
            for ratio in ratios:
                if wanted(method, ratio):
                    started = time.perf_counter()
                    chosen = press_selection(PRESSES[method](ratio), recorder, pre)
                    yield bench.Variant(method, ratio, chosen, time.perf_counter() - started)

    return source


def equivalence(model: Any, tokenizer: Any, recorder: Recorder, args: argparse.Namespace) -> dict[str, Any]:
    """Share of kept indices tokensift and kvpress agree on, same inputs and budget, per method and ratio."""
    shares: dict[str, dict[str, list[float]]] = {m: {f"{r:g}": [] for r in args.ratios} for m in OURS_AS_KVPRESS}
    for index in range(args.equivalence):
        sample = build("niah", args.data, tokenizer, index, args.seed, args.length)
        head, _ = split_prompt(tokenizer, sample, False)
        recorder.inputs.clear()
        pre = bench.prefill(model, head)
        for method, options in OURS_AS_KVPRESS.items():
            for ratio in args.ratios:
                theirs = press_selection(PRESSES[method](ratio), recorder, pre)
                for idx, view in pre.views.items():
                    kept = int(view.n * (1 - ratio))  # kvpress's budget
                    ours = press_from(method, keep_tokens=kept, **options)
                    mine = ours.compress(view)
                    for a, b in zip(mine, theirs[idx], strict=True):
                        shares[method][f"{ratio:g}"].append(len(set(a.tolist()) & set(b.tolist())) / max(1, len(b)))
    return {m: {r: sum(v) / len(v) for r, v in by.items() if v} for m, by in shares.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", type=Path, default=Path.home() / ".cache/tokensift/models/smollm2-135m")
    parser.add_argument("--model-name", default="smollm2-135m")
    parser.add_argument("--tasks", default="niah,niah_multikey,nq_qa")
    parser.add_argument("--methods", default=",".join(PRESSES), help="its presses that match ours; kvzip on request")
    parser.add_argument("--ratios", default="0.5,0.75,0.875")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--modes", default="query-agnostic,query-aware")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "../shared/data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "../out/kv")
    parser.add_argument("--equivalence", type=int, default=0, help="prefills for the index-agreement check")
    args = parser.parse_args()
    args.ratios = [float(r) for r in args.ratios.split(",")]
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    recorder = Recorder(model)
    if args.equivalence:
        result = equivalence(model, tokenizer, recorder, args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "equivalence.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    methods = args.methods.split(",")
    store = RowStore(args.out)
    base = {"system": "kvpress", "target": "kv", "model": args.model_name}
    source = kvpress_variants(recorder, model)
    items = bench.work(args.tasks.split(","), args.modes.split(","), args.samples)
    for done, (task, index, mode) in enumerate(items, 1):
        sample = build(task, args.data, tokenizer, index, args.seed, args.length)
        recorder.inputs.clear()
        started = time.perf_counter()
        written = bench.run_sample(model, tokenizer, sample, mode, methods, args.ratios, store, base, source)
        print(
            f"[{done}/{len(items)}] {task} #{index} {mode}: {written} rows, {time.perf_counter() - started:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
