"""Budget allocation across layers and heads: how many tokens each layer (PyramidKV), each head (AdaKV)
or each (layer, head) of the whole model (KVzip) keeps when the total is fixed. Pure functions; the
totals are exact so memory matches the budget."""

from __future__ import annotations

import torch
from torch import Tensor

from tokensift.errors import ParameterError


def pyramid_budgets(n_layers: int, keep: int, n: int, *, window: int = 0, beta: float = 20.0) -> list[int]:
    """Per-layer token budgets that fall linearly with depth and sum to exactly ``n_layers * keep``.

    Cai et al., 2024, "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling":
    lower layers spread attention widely and get more tokens, upper layers get fewer. The last layer keeps
    ``window + (keep - window) / beta`` tokens, the first ``2 * keep`` minus that (capped at ``n``, in which
    case the slope is flattened so the mean stays ``keep``).
    """
    if not 0 <= keep <= n:
        raise ParameterError(f"cannot keep {keep} of {n} tokens")
    if beta < 1:
        raise ParameterError(f"pyramid beta must be at least 1, got {beta}")
    if n_layers == 1 or keep <= window:
        return [keep] * n_layers
    low = window + (keep - window) / beta
    high = 2 * keep - low
    if high > n:
        high, low = float(n), 2 * keep - float(n)
    budgets = [round(high - (high - low) * layer / (n_layers - 1)) for layer in range(n_layers)]
    surplus = sum(budgets) - n_layers * keep  # rounding: move the difference onto the middle layers
    step = -1 if surplus > 0 else 1
    layer = n_layers // 2
    while surplus:
        if 0 <= budgets[layer] + step <= n:
            budgets[layer] += step
            surplus += step
        layer = (layer + 1) % n_layers
    return budgets


def _top_together(scores: Tensor, total: int) -> Tensor:
    """Boolean mask of the ``total`` highest entries of ``scores`` ranked all together (ties: earlier first)."""
    flat = torch.sort(scores.flatten(), descending=True, stable=True).indices[:total]
    chosen = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    chosen[flat] = True
    return chosen.view(scores.shape)


def head_adaptive_indices(
    scores: Tensor, keep: int, *, safeguard: float = 0.2, protect_first: int = 0, protect_last: int = 0
) -> list[Tensor]:
    """Split ``heads * keep`` kept tokens among the heads of one layer by their scores, ``[H, T]`` in.

    Feng et al., 2024, "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation": rank every
    (head, token) score of the layer together and keep the overall top ``heads * keep``, so heads with
    concentrated attention give their budget to heads that spread it. Each head first keeps its own top
    ``safeguard * keep`` tokens and its protected positions. Returns one ascending index tensor per head
    (lengths differ; they sum to ``heads * keep``).
    """
    heads, n = scores.shape
    if not 0 <= keep <= n:
        raise ParameterError(f"cannot keep {keep} of {n} tokens")
    if not 0.0 <= safeguard <= 1.0:
        raise ParameterError(f"safeguard must be in [0, 1], got {safeguard}")
    boosted = scores.float().clone()
    positions = torch.arange(n, device=scores.device)
    boosted[:, (positions < protect_first) | (positions >= n - protect_last)] = float("inf")
    safe = max(int(keep * safeguard), min(keep, protect_first + protect_last))
    if safe:
        top = boosted.topk(safe, dim=-1).indices
        boosted.scatter_(-1, top, float("inf"))
    return [row.nonzero().flatten() for row in _top_together(boosted, heads * keep)]


def _layer_shape(scores: list[Tensor], keep: int) -> tuple[int, int]:
    """``(heads, tokens)`` shared by every layer's scores, checked, and ``keep`` within the tokens."""
    heads, n = scores[0].shape
    if not 1 <= keep <= n:
        raise ParameterError(f"cannot keep {keep} of {n} tokens")
    if any(s.shape != (heads, n) for s in scores):
        raise ParameterError("a model-wide selection needs every layer's scores with the same shape")
    return int(heads), int(n)


def global_indices(
    scores: list[Tensor], keep: int, *, protect_first: int = 0, protect_last: int = 0
) -> list[list[Tensor]]:
    """Kept positions when ``keep`` tokens per head *on average* are shared by all layers and heads.

    KVzip (Kim et al., 2025) ranks the (layer, head, token) scores of the whole model together, so layers
    and heads whose scores say they matter keep more and the rest less. ``scores`` holds one ``[H, T]``
    tensor per layer (all the same ``T``); exactly ``layers * H * keep`` positions are kept. Protected
    positions and each head's best token are always kept (no head is ever empty). Returns, per layer, one
    ascending index tensor per head.
    """
    if not scores:
        return []
    heads, n = _layer_shape(scores, keep)
    boosted = torch.stack([s.float() for s in scores]).clone()  # [L, H, T]
    positions = torch.arange(n, device=boosted.device)
    boosted[:, :, (positions < protect_first) | (positions >= n - protect_last)] = float("inf")
    best = boosted.argmax(-1, keepdim=True)
    boosted.scatter_(-1, best, float("inf"))
    layers = _top_together(boosted, len(scores) * heads * keep)
    return [[row.nonzero().flatten() for row in layer] for layer in layers]


def composite_indices(
    scores: list[Tensor], keep: int, *, protect_first: int = 0, protect_last: int = 0
) -> list[list[Tensor]]:
    """Kept positions as *composite tokens*: every head of a layer keeps the same number of tokens, the number
    set per layer by one budget for the whole model.

    KVCompose (Akulov et al., 2025, arXiv:2509.05165): each head ranks its own tokens; the ``i``-th composite
    token of a layer is the ``i``-th best token of every head, scored by the mean of those heads' scores. All
    layers' composite tokens are ranked together and the ``layers * keep`` best are kept, so a layer whose heads
    score many tokens high keeps more; a layer keeps a prefix of its composites (their scores fall with ``i``),
    so every head of it holds the same number of tokens: a dense ``[Hkv, L_layer, D]`` cache. Protected positions
    rank first in every head; each layer keeps at least one composite. ``scores``: one ``[H, T]`` per layer.
    """
    if not scores:
        return []
    heads, n = _layer_shape(scores, keep)
    positions = torch.arange(n, device=scores[0].device)
    protected = (positions < protect_first) | (positions >= n - protect_last)
    ranked, composite = [], []
    for layer in scores:
        boosted = layer.float().masked_fill(protected, float("inf"))
        values, order = boosted.sort(dim=-1, descending=True, stable=True)
        ranked.append(order)
        composite.append(values.mean(0))
    together = torch.stack(composite)  # [L, T], falling along T
    together[:, 0] = float("inf")  # at least one composite per layer
    flat = torch.topk(together.flatten(), len(scores) * keep).indices
    counts = torch.bincount(torch.div(flat, n, rounding_mode="floor"), minlength=len(scores))
    return [[order[h, : int(c)].sort().values for h in range(heads)] for order, c in zip(ranked, counts, strict=True)]
