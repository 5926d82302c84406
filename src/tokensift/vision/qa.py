"""Answering with a VLM whose visual tokens were chosen: prefill (with FastV inside it when asked), greedy decode."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tokensift.methods import resolve
from tokensift.vision.fastv import fastv_prefill, greedy
from tokensift.vision.methods.base import VisionMethod
from tokensift.vision.pipeline import Prepared, prepare


@dataclass
class Answer:
    """What :func:`answer` returns for a batch."""

    answers: list[str]
    prepared: Prepared
    prefill_seconds: float
    """Vision tower, selection and the language model's prefill (to the first token's logits)."""
    decode_seconds_per_token: float
    new_tokens: int
    first_logits: Tensor | None = None
    """``[B, V]`` the logits of each answer's first token (closed-set scoring ranks candidate answers by them)."""


@torch.no_grad()
def answer(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[Any],
    questions: Sequence[str],
    method: str | VisionMethod | None = None,
    *,
    keep: float | None = None,
    keep_tokens: int | None = None,
    max_new_tokens: int = 8,
    **options: Any,
) -> Answer:
    """Greedy answers to ``questions`` about ``images`` with the visual tokens ``method`` keeps."""
    chosen = resolve("vision", method, **options) if isinstance(method, str) else method
    started = time.perf_counter()
    inside = chosen is not None and chosen.stage == "llm"
    before = None if inside else chosen
    prepared = prepare(model, processor, images, questions, before, keep=keep, keep_tokens=keep_tokens)
    prefill = fastv_prefill(model, prepared, chosen if inside else None, keep=keep, keep_tokens=keep_tokens)
    prefill_seconds = time.perf_counter() - started
    if prefill.image_kept is not None:  # FastV: what the layers after K saw
        prepared.status = torch.where(prefill.image_kept, 0, 2)
        prepared.kept = [int(k) for k in prefill.image_kept.sum(dim=1).tolist()]
    started = time.perf_counter()
    tokens = greedy(model, prefill, max_new_tokens, eos=_eos(processor.tokenizer))
    decode = time.perf_counter() - started
    texts = processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    steps = max(1, tokens.shape[1] - 1)
    return Answer(
        [t.strip() for t in texts], prepared, prefill_seconds, decode / steps, int(tokens.shape[1]), prefill.logits
    )


def _eos(tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end, int) and end != tokenizer.unk_token_id:
        ids.add(end)
    return sorted(i for i in ids if isinstance(i, int))
