"""Run LLMLingua (llmlingua==0.2.2, Jiang et al.) on tokensift's benchmark instances, in its own venv.

Usage: .venv/bin/python run.py MODEL_FOLDER INSTANCES.jsonl OUTPUTS.jsonl

Each input line: {"id", "task", "prompt": str | [str], "question": str | null, "rates": [..], "modes": [..]}.
Each output line: {"id", "mode", "rate", "compressed", "seconds", "error"}; lines already in OUTPUTS are
skipped, so an interrupted run resumes. Two offline shims make 0.2.2 run on transformers 5 without a hub:

1. ``tiktoken.encoding_for_model("gpt-3.5-turbo")`` downloads a BPE file; it is replaced by the small
   LM's own Hugging Face tokenizer, so LLMLingua counts budgets in the same tokens as tokensift.
2. LLMLingua slices ``past_key_values`` as tuples of (key, value) tensors; transformers 5 returns a
   ``DynamicCache``. The model is wrapped to convert tuples to a cache on the way in and back on the way out.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import AutoTokenizer, DynamicCache


class HFEncoding:
    """The part of a tiktoken ``Encoding`` LLMLingua uses, backed by a Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str, **_: Any) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int], **_: Any) -> str:
        return self.tokenizer.decode(ids)


class TupleCacheModel(torch.nn.Module):
    """Wrap a causal LM so ``past_key_values`` go in and come out as tuples of (key, value) per layer."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, input_ids: torch.Tensor, past_key_values: Any = None, **kwargs: Any) -> Any:
        cache = None
        if past_key_values is not None:
            cache = DynamicCache()
            for layer, (key, value) in enumerate(past_key_values):
                cache.update(key, value, layer)
        out = self.inner(input_ids, past_key_values=cache, **kwargs)
        legacy = None
        if out.past_key_values is not None:
            legacy = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
        return SimpleNamespace(logits=out.logits, past_key_values=legacy)


def load(model_folder: str) -> Any:
    import llmlingua.prompt_compressor as pc

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    pc.tiktoken.encoding_for_model = lambda name: HFEncoding(tokenizer)  # shim 1
    compressor = pc.PromptCompressor(model_folder, device_map="cpu", model_config={"trust_remote_code": False})
    compressor.model = TupleCacheModel(compressor.model)  # shim 2
    return compressor


MODES = {
    "llmlingua": {},
    "longllmlingua": {
        "rank_method": "longllmlingua",
        "condition_in_question": "after_condition",
        "condition_compare": True,
        "dynamic_context_compression_ratio": 0.3,
        "reorder_context": "original",
    },
}


def compress(compressor: Any, item: dict[str, Any], mode: str, rate: float) -> str:
    """LLMLingua's compressed context (its question, appended at the end, is removed again)."""
    context = item["prompt"] if isinstance(item["prompt"], list) else item["prompt"].split("\n\n")
    question = item.get("question") or ""
    result = compressor.compress_prompt(context, instruction="", question=question, rate=rate, **MODES[mode])
    text = result["compressed_prompt"]
    if question and text.endswith(question):
        text = text[: -len(question)]
    return text.strip()


def main() -> None:
    model_folder, inputs, outputs = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    done = set()
    if outputs.exists():
        for line in outputs.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            done.add((row["id"], row["mode"], row["rate"]))
    items = [json.loads(line) for line in inputs.read_text(encoding="utf-8").splitlines() if line.strip()]
    todo = [(i, m, r) for i in items for m in i["modes"] for r in i["rates"] if (i["id"], m, r) not in done]
    if not todo:
        return
    compressor = load(model_folder)
    with outputs.open("a", encoding="utf-8") as handle:
        for number, (item, mode, rate) in enumerate(todo, 1):
            start = time.perf_counter()
            try:
                text, error = compress(compressor, item, mode, rate), None
            except Exception as exc:  # a peer failure is a result to report, not a crash
                text, error = "", f"{type(exc).__name__}: {exc}"
            row = {
                "id": item["id"],
                "mode": mode,
                "rate": rate,
                "compressed": text,
                "seconds": time.perf_counter() - start,
                "error": error,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            print(f"llmlingua peer {number}/{len(todo)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
