"""transformers' own quantized KV cache on the very task instances of ``tokensift bench kv --budget bytes``.

Usage (needs ``optimum-quanto``, the backend transformers uses for it: ``pip install optimum-quanto==0.2.7``)::

    .venv/bin/python benchmarks/peers/hf_quantized.py --out DIR --tasks niah,niah_multikey --samples 30 --bits 2,4

Each sample's context is prefilled into ``transformers.QuantizedCache(backend="quanto", nbits=B)`` (every
context token quantized: the prefill fills no full-precision residual), then the question is answered with the
same greedy loop as tokensift's rows (``tokensift.kv.qa.answer``: plain SDPA over transformers' cache) and
scored the same way. The bytes are those of quanto's packed tensors (codes, scales and shifts) plus any
full-precision residual. A row goes into the smallest bytes budget of the run (12.5 / 25 / 50 % of the full
cache) that it fits under (``ratio`` = 1 - that budget), with its own measured ``kept_fraction``;
``system=transformers``, ``method=quanto<B>``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import QuantizedCache

from tokensift.bench import RowStore
from tokensift.bench.data import require_data_dir
from tokensift.kv.attach import CompressionStats
from tokensift.kv.bench import _logprob
from tokensift.kv.qa import CompressedContext, answer
from tokensift.kv.tasks import build, split_prompt, string_match
from tokensift.models import load_model

BUDGETS = (0.125, 0.25, 0.5)


def stored_bytes(tensor: Any) -> int:
    """Bytes behind a tensor, or behind the inner tensors of a quanto tensor subclass."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(stored_bytes(getattr(tensor, name)) for name in names)
    return int(tensor.untyped_storage().nbytes()) if tensor.numel() else 0


def cache_bytes(cache: Any) -> int:
    total = 0
    for layer in cache.layers:
        for name in ("_quantized_keys", "_quantized_values", "keys", "values"):
            part = getattr(layer, name, None)
            if part is not None:
                total += stored_bytes(part)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default="niah,niah_multikey")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--bits", default="2,4")
    parser.add_argument("--group", type=int, default=64, help="quanto's q_group_size (transformers' default 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    data = require_data_dir(None)
    store = RowStore(args.out)
    stop = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for index in range(args.samples):
        for task in args.tasks.split(","):
            sample = build(task, data, tokenizer, index, args.seed, args.length)
            head, tail = split_prompt(tokenizer, sample, False)
            full = len(head) * 2 * model.config.num_hidden_layers * model.config.num_key_value_heads
            full *= model.config.hidden_size // model.config.num_attention_heads * 4  # float32 keys and values
            for bits in (int(b) for b in args.bits.split(",")):
                cache = QuantizedCache(
                    backend="quanto", config=model.config, nbits=bits, q_group_size=args.group, residual_length=128
                )
                with torch.no_grad():
                    began = time.perf_counter()
                    logits = model(torch.tensor([head]), past_key_values=cache, use_cache=True).logits[:, -1]
                    seconds = time.perf_counter() - began
                stored = cache_bytes(cache)
                budget = next((b for b in BUDGETS if stored <= b * full), 1.0)
                key = {
                    "system": "transformers",
                    "target": "kv",
                    "model": loaded.name,
                    "task": task,
                    "mode": "query-agnostic",
                    "method": f"quanto{bits}",
                    "ratio": round(1.0 - budget, 6),
                    "sample_id": sample.sample_id,
                }
                if store.has(**key):
                    continue
                context = CompressedContext(cache, len(head), CompressionStats(), seconds, logits)
                result = answer(
                    model, context, torch.tensor([tail]), max_new_tokens=sample.max_new_tokens, stop_ids=stop
                )
                output = tokenizer.decode(result.ids[0], skip_special_tokens=True)
                correct, recall = string_match(output, sample)
                gold = tokenizer(" " + sample.answers[0], add_special_tokens=False).input_ids
                logprob = _logprob(model, context, tail, gold)[0] if task == "nq_qa" else None
                store.append(
                    {
                        **key,
                        "budget": "bytes",
                        "token_ratio": 0.0,
                        "kept_fraction": stored / full,
                        "cache_bytes": stored,
                        "full_cache_bytes": full,
                        "context_tokens": len(head),
                        "tail_tokens": len(tail),
                        "prefill_s": seconds,
                        "scoring_s": 0.0,
                        **sample.meta,
                        "correct": correct,
                        "recall": recall,
                        "output": output.strip(),
                        "gold_logprob": logprob,
                    }
                )
        print(f"sample {index + 1}/{args.samples}", flush=True)


if __name__ == "__main__":
    main()
