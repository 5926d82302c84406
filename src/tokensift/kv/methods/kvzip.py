"""KVzip: keep what the model needs to repeat its context, whatever the question will be.

Kim et al., 2025, "KVzip: Query-Agnostic KV Cache Compression with Context Reconstruction"
(arXiv:2505.23416). After the
prefill, the model reads "Repeat the previous context exactly." and then the context itself (teacher
forced, in chunks of ``chunk`` tokens for long contexts). Each cached KV pair is scored by the largest
attention any reconstruction query of its KV group gives it (:func:`tokensift.scores.reconstruction_attention`),
and the budget is shared by all layers and heads at once (:func:`tokensift.select.global_indices`):
heads that only look at sinks or neighbours keep little, heads that copy keep what they copy.
Unpredictable content such as a number in an essay must be attended to be copied, so it survives
without the question in view. The ragged cache stores each head's own number of tokens, so the
non-uniform budget saves real memory (kvpress masks it).

Differences from the reference code (the authors' and kvpress's ``KVzipPress``), which normalise each
repeat pass over the system prompt (kvpress: its first 4 tokens), the chunk being repeated and the pass
itself: here the softmax runs over every key the model attends to, which is the same for a context of one
chunk and counts the other chunks for longer ones; and the chat template's header is scored like the
context (the authors keep it outside the budget, kvpress keeps 4 sinks and scores the rest 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from tokensift.errors import MethodUnsupportedError, ParameterError
from tokensift.kv.press import GlobalBudgetPress
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, option, register
from tokensift.scores import reconstruction_attention

FIRST_PROMPT = "\n\nRepeat the previous context exactly."
NEXT_PROMPT = "\n\nRepeat the part of the previous context exactly, starting with"
OVERLAP = 8
"""Tokens of the previous chunk quoted in a later chunk's prompt, so the model knows where to resume."""


def template_parts(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids the chat template puts before and after a user message (``[]`` and a newline without one)."""

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    if not getattr(tokenizer, "chat_template", None):
        return [], encode("\n")
    marker = "tokensift-context-marker"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
    )
    before, after = rendered.split(marker, 1)
    return encode(before), encode(after)


@register
@dataclass
class KVzip(GlobalBudgetPress):
    """Context-reconstruction scores, one budget for the whole model; ``protect_first`` sinks (4) kept.

    A repeat pass is read after the whole context, so context + ``chunk`` + prompt must fit the model's
    positions (:class:`~tokensift.errors.ContextTooLongError` otherwise); a smaller ``chunk`` fits longer contexts.
    Wrapped (``adakv:kvzip``, ``pyramidkv:kvzip``), its scores serve the wrapper's per-layer budgets instead.
    """

    name: ClassVar[str] = "kvzip"
    paper: ClassVar[Paper] = Paper(
        "Kim et al., 2025",
        "KVzip: Query-Agnostic KV Cache Compression with Context Reconstruction",
        arxiv="2505.23416",
    )
    summary: ClassVar[str] = (
        "attention from a pass that repeats the context; one budget for all layers and heads (ragged)"
    )
    needs_probe = True
    scores_in_probe = True
    """The repeat pass's attention calls form the scores (:func:`tokensift.kv.probe.reconstruction_probes`): the
    logits over the context keys are formed once, for the pass's output and for the scores alike."""

    protect_first: int = option(4, low=0)
    chunk: int = option(2048, low=1)
    pass_dtype: Literal["auto", "model", "bfloat16"] = "auto"
    """``bfloat16``: the repeat pass's linear layers run under bfloat16 autocast (fast on CPUs with AMX or
    AVX512-BF16 and on GPUs), and so do its causal attention over its own keys and its two products over the
    context keys (logits, weights x values); the softmax over the context, the scores and the cache it scores
    stay float32. The scores only rank the pairs, so the kept set changes little (99.4-99.6 % the same on the
    essays); KVzip's authors run the whole model in bf16. ``model``: the pass in the model's own dtype. ``auto``
    (default): ``bfloat16`` for a float32 model on hardware with fast bf16 products, else ``model``
    (:func:`tokensift.kv.probe.pass_dtype`)."""
    tokenizer: Any = None
    """Builds the repeat prompt; required (``compress(model, "kvzip", tokenizer=...)``)."""

    def probe_inputs(self, ids: list[int]) -> list[list[int]]:
        """One repeat pass per chunk of the context (the chat template's own opening is not repeated)."""
        if self.tokenizer is None:
            raise ParameterError("kvzip writes its repeat prompt with the model's tokenizer: pass tokenizer=...")
        prefix, suffix = template_parts(self.tokenizer)
        body = ids[len(prefix) :] if prefix and ids[: len(prefix)] == prefix else ids
        first, later = (
            list(self.tokenizer(p, add_special_tokens=False).input_ids) for p in (FIRST_PROMPT, NEXT_PROMPT)
        )
        chunks = [body[start : start + self.chunk] for start in range(0, len(body), self.chunk)] or [[]]
        return [
            (first if c == 0 else later + chunks[c - 1][-OVERLAP:]) + suffix + part for c, part in enumerate(chunks)
        ]

    def score(self, view: LayerView) -> Tensor:
        if view.probe_scores:
            return torch.stack(view.probe_scores).amax(0)
        if not view.probes:
            raise MethodUnsupportedError("kvzip scores come from its repeat pass, which this caller did not run")
        found = [
            reconstruction_attention(queries[0], view.keys[0], keys[0], scaling=view.scaling)
            for queries, keys in view.probes
        ]
        return torch.stack(found).amax(0)
