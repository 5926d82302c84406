"""Language-model signals: surprisal (self-information) and predictive entropy of each token.

Surprisal ``-log p(x_t | x_<t)`` is the self-information used by Selective Context (Li et al., 2023,
"Compressing Context to Enhance Inference Efficiency of Large Language Models") and LLMLingua
(Jiang et al., 2023); flagging tokens whose surprisal stands out within a sequence is the event-flagging
idea of "Quantifying surprise in clinical care" (2025). Entropy of the predictive distribution says how
uncertain the model was *before* seeing the token. Both are in nats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tokensift.errors import ParameterError

DEFAULT_WINDOW = 2048
"""Tokens per forward pass by default: every token still sees >= 1,024 tokens of context, and the logits of a
window stay small (a 262k vocabulary at 8k tokens would need 8 GiB of float32 logits)."""
_CHUNK_ELEMENTS = 1 << 24  # logits turned into float64 log-probabilities at a time (128 MiB)


def next_token_scores(logits: Tensor, input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Surprisal and entropy of every token from a causal LM's logits over the same sequence.

    ``logits[t]`` is the distribution predicted after ``input_ids[: t + 1]``. Token ``t`` is scored with
    ``logits[t - 1]``, so position 0 (nothing predicts it) gets NaN. Shapes: ``logits [T, V]``,
    ``input_ids [T]`` -> two ``[T]`` float32 tensors.
    """
    if logits.dim() != 2 or input_ids.dim() != 1 or logits.shape[0] != input_ids.shape[0]:
        raise ValueError(f"expected logits [T, V] and ids [T], got {tuple(logits.shape)}, {tuple(input_ids.shape)}")
    length = input_ids.shape[0]
    surprisal = torch.full((length,), float("nan"))
    entropy = torch.full((length,), float("nan"))
    rows = max(1, _CHUNK_ELEMENTS // logits.shape[1])
    for start in range(0, length - 1, rows):
        stop = min(start + rows, length - 1)
        logp = torch.log_softmax(logits[start:stop].double(), dim=-1)  # float64: exact to ~1e-7 nats
        targets = input_ids[start + 1 : stop + 1]
        surprisal[start + 1 : stop + 1] = -logp.gather(-1, targets[:, None]).squeeze(-1)
        entropy[start + 1 : stop + 1] = -(logp.exp() * logp).sum(-1)
    return surprisal, entropy


def plan_windows(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Overlapping windows that score each of ``length`` tokens exactly once.

    Returns ``(start, stop, first_scored)`` triples: the model reads tokens ``[start, stop)`` and the
    tokens ``[first_scored, stop)`` take their scores from this window. Every token after the first
    window is scored with at least ``window - stride`` tokens of context.
    """
    if window < 2:
        raise ParameterError(f"window must be at least 2 tokens, got {window}")
    if not 1 <= stride <= window:
        raise ParameterError(f"stride must be in [1, window={window}], got {stride}")
    if length <= window:
        return [(0, length, 0)]
    plans = [(0, window, 0)]
    scored = window
    while scored < length:
        stop = min(scored + stride, length)
        plans.append((stop - window, stop, scored))
        scored = stop
    return plans


@dataclass
class LMScores:
    """Per-token LM scores for one sequence (NaN where a token could not be scored)."""

    input_ids: Tensor
    surprisal: Tensor
    entropy: Tensor
    windows: list[tuple[int, int, int]]

    @property
    def perplexity(self) -> float:
        """exp(mean surprisal) over the scored tokens."""
        valid = self.surprisal[~torch.isnan(self.surprisal)]
        return float(torch.exp(valid.mean())) if valid.numel() else float("nan")


@torch.no_grad()
def lm_scores(
    model: torch.nn.Module,
    input_ids: Tensor,
    *,
    window: int | None = None,
    stride: int | None = None,
    prefix_id: int | None = None,
    condition: Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LMScores:
    """Score a sequence of any length with a causal LM, in overlapping windows when it is long.

    ``window`` is the number of text tokens read per forward pass (default: ``DEFAULT_WINDOW`` or the
    model's context minus the prefix, whichever is smaller); ``stride`` how far windows advance
    (default: half a window, so every token sees at least half a window of context). ``prefix_id`` (e.g. BOS)
    is put before every window so the first token is scored too and each window starts like a document.
    ``condition`` (token ids, e.g. a question) is read after the prefix at the start of every window, so every
    score is conditioned on it (LongLLMLingua's question-conditioned perplexity). ``progress(done, total)`` is
    called after each window.
    """
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must be 1-D, got shape {tuple(input_ids.shape)}")
    length = int(input_ids.shape[0])
    head = torch.tensor([] if prefix_id is None else [prefix_id], dtype=input_ids.dtype)
    if condition is not None:
        head = torch.cat([head, condition.to(input_ids.dtype)])
    extra = int(head.shape[0])
    context = int(getattr(_text_config(model), "max_position_embeddings", 0) or 0)
    if window is None:
        window = min(context - extra, DEFAULT_WINDOW) if context else DEFAULT_WINDOW
    if context and window + extra > context:
        raise ParameterError(
            f"window {window} (+{extra} prefix/condition) exceeds the model's context of {context} tokens"
        )
    stride = stride if stride is not None else max(1, window // 2)
    plans = plan_windows(length, window, stride)
    surprisal = torch.full((length,), float("nan"))
    entropy = torch.full((length,), float("nan"))
    device = next(model.parameters()).device
    for done, (start, stop, first) in enumerate(plans, 1):
        ids = input_ids[start:stop]
        ids = torch.cat([head, ids])
        logits = model(ids[None].to(device), use_cache=False).logits[0].cpu()
        s, e = next_token_scores(logits, ids)
        offset = first - start + extra
        surprisal[first:stop] = s[offset:]
        entropy[first:stop] = e[offset:]
        if progress is not None:
            progress(done, len(plans))
    return LMScores(input_ids, surprisal, entropy, plans)


def _text_config(model: torch.nn.Module) -> object:
    config = model.config
    return getattr(config, "text_config", None) or config
