"""Where does kvzip's compression time go? Run: .venv/bin/python benchmarks/kvzip_cost.py [--lengths 1024,2048]

For each context length (the first essays of the data folder, cut to that many tokens, chat-formatted as
the KV benchmark does), one process times, with the variants taking turns so a busy machine slows them
alike (medians of ``--repeats``):

* ``prefill``: a plain prefill (no compression), the denominator of every ratio;
* ``kvzip``: the whole compression through ``tokensift.kv.compress`` with kvzip's defaults (prefill + repeat
  pass + scoring + selection + building the ragged cache), with the phases timed apart: ``prefill`` (the forward
  over the context), ``probe`` (the repeat passes), ``score`` (the scorer on the probe rows), ``select``
  (the model-wide budget) and ``build`` (the ragged cache). Its default ``pass_dtype="auto"`` runs the pass in
  bf16 where the hardware multiplies bf16 (the repeat pass's linear layers, its causal attention over its own
  keys and its products over the context keys; the softmax over the context, the scores and the cache stay
  float32): the header says which it was;
* ``kvzip-float32``: ``kvzip`` with ``pass_dtype="model"`` (the whole pass in the model's float32);
* ``kvzip-recompute``: ``kvzip-float32`` with the scores recomputed after the pass from its recorded query rows
  (``scores_in_probe`` off, how kvzip scored before), to show what forming them in the pass saves;
* ``kvzap``: the same compression with kvzap's surrogate scoring the prefill's hidden states (no repeat
  pass): ``score`` is its linear maps.

Prints a table and, with ``--json``, one JSON object per line; ``--profile`` also prints torch's profile of one
kvzip compression per length (the operators that take the time: the flash attention calls, the reconstruction
max's batched products, the MLP's linear layers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import DynamicCache

from tokensift.bench import data as files
from tokensift.kv import attach, compress, press_from
from tokensift.kv.cache import RaggedLayer
from tokensift.kv.methods.kvzap import KVzap
from tokensift.kv.methods.kvzip import KVzip
from tokensift.kv.press import GlobalBudgetPress
from tokensift.kv.probe import pass_dtype
from tokensift.models import load_model

PHASES = ("prefill", "probe", "score", "select", "build")


def context_ids(tokenizer: Any, data: Path, length: int) -> torch.Tensor:
    """The first ``length`` tokens of the essays as one chat user turn (the template's opening included)."""
    text = "\n\n".join(files.essays(data)[:4])
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
    ids = tokenizer(rendered, add_special_tokens=False).input_ids
    if len(ids) < length:
        raise SystemExit(f"the essays give {len(ids)} tokens, fewer than {length}")
    return torch.tensor([ids[:length]])


@contextmanager
def timed(owner: Any, name: str, phase: str, spent: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in ``owner.name`` to ``spent[phase]`` while the block runs."""
    original = getattr(owner, name)
    raw = vars(owner)[name]  # restored as it was (a classmethod stays one)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[phase] += time.perf_counter() - began

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, raw)


def run_kvzip(
    model: Any,
    tokenizer: Any,
    ids: torch.Tensor,
    ratio: float,
    recompute: bool,
    method: str = "kvzip",
    pass_dtype: str = "auto",
) -> dict[str, float]:
    """One compression, its phases timed apart."""
    spent: dict[str, float] = defaultdict(float)
    options: dict[str, Any] = {"tokenizer": tokenizer, "pass_dtype": pass_dtype} if method == "kvzip" else {}
    press = press_from(method, ratio=ratio, **options)
    KVzip.scores_in_probe = not recompute
    probe_name = "reconstruction_probes" if not recompute else "run_probes"
    try:
        with (
            timed(attach, probe_name, "probe", spent),
            timed(KVzip, "score", "score", spent),
            timed(KVzap, "score", "score", spent),
            timed(GlobalBudgetPress, "select_layers", "select", spent),
            timed(RaggedLayer, "from_selection", "build", spent),
            timed(attach.Session, "after_forward", "after", spent),
        ):
            began = time.perf_counter()
            with torch.no_grad(), compress(model, press):
                model(ids, past_key_values=DynamicCache(config=model.config), logits_to_keep=1)
            total = time.perf_counter() - began
    finally:
        KVzip.scores_in_probe = True
    figures = {phase: spent[phase] for phase in PHASES if phase != "prefill"}
    figures["prefill"] = total - spent["after"]
    figures["total"] = total
    return figures


def plain_prefill(model: Any, ids: torch.Tensor) -> float:
    began = time.perf_counter()
    with torch.no_grad():
        model(ids, past_key_values=DynamicCache(config=model.config), logits_to_keep=1)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", default="1024,2048")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.875)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print torch's operator profile of one kvzip run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    variants: dict[str, Callable[[torch.Tensor], dict[str, float]]] = {
        "prefill": lambda ids: {"total": plain_prefill(model, ids)},
        "kvzip": lambda ids: run_kvzip(model, tokenizer, ids, args.ratio, recompute=False),
        "kvzip-float32": lambda ids: run_kvzip(model, tokenizer, ids, args.ratio, False, pass_dtype="model"),
        "kvzip-recompute": lambda ids: run_kvzip(model, tokenizer, ids, args.ratio, True, pass_dtype="model"),
        "kvzap": lambda ids: run_kvzip(model, tokenizer, ids, args.ratio, recompute=False, method="kvzap"),
    }
    for length in (int(x) for x in args.lengths.split(",")):
        ids = context_ids(tokenizer, args.data, length)
        for run in variants.values():  # warm-up
            run(ids)
        found: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                found[name].append(run(ids))
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run_kvzip(model, tokenizer, ids, args.ratio, recompute=False)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        base = statistics.median(f["total"] for f in found["prefill"])
        auto = pass_dtype(model, "auto")
        print(
            f"\n{args.model}, {ids.shape[1]} tokens, {args.threads} threads, medians of {args.repeats}; kvzip's "
            f"default pass: {'bfloat16' if auto is not None else 'the model dtype'}:"
        )
        print(f"{'variant':<18}{'total s':>9}{'÷ prefill':>11}" + "".join(f"{p:>9}" for p in PHASES))
        for name, runs in found.items():
            median = {key: statistics.median(r.get(key, 0.0) for r in runs) for key in ("total", *PHASES)}
            cells = "".join(f"{median[p]:>9.2f}" if name != "prefill" else f"{'':>9}" for p in PHASES)
            print(f"{name:<18}{median['total']:>9.2f}{median['total'] / base:>10.2f}×{cells}")
            if args.json:
                print(json.dumps({"model": args.model, "tokens": int(ids.shape[1]), "variant": name, **median}))


if __name__ == "__main__":
    main()
