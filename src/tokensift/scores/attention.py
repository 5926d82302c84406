"""Attention received by each key: accumulated (H2O), observation window (SnapKV), with forgetting (A2SF).

All three are one quantity, the attention weight a set of query rows puts on each key, summed with a
per-row weight:

* H2O (Zhang et al., 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs"):
  every query row, weight 1.
* SnapKV (Li et al., 2024, "SnapKV: LLM Knows What You are Looking for Before Generation"): only the
  last ``w`` query rows (the observation window).
* A2SF (Jo & Shin, 2024, "A2SF: Accumulative Attention Scoring with Forgetting Factor"): row ``i`` of
  ``q`` rows weighted by ``forgetting ** (q - 1 - i)``, so older queries count less.

We never need the model in eager mode: the caller passes the query rows it wants (see
:mod:`tokensift.hooks`) and this module computes only those rows of the attention matrix,
``chunk`` rows at a time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def _row_mask(mask: Tensor | None, rows: slice, n_queries: int, n_keys: int, device: torch.device) -> Tensor:
    """Additive float mask ``[B|1, H|1, r, T]`` for query rows ``rows`` (queries are the last rows)."""
    if mask is None:  # plain causal: query i sits at absolute position n_keys - n_queries + i
        q_pos = torch.arange(n_keys - n_queries, n_keys, device=device)[rows]
        allowed = torch.arange(n_keys, device=device)[None, :] <= q_pos[:, None]
        return torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))[None, None]
    part = mask[..., rows, :n_keys]
    if part.dtype == torch.bool:
        return torch.zeros(part.shape, device=device).masked_fill(~part, float("-inf"))
    return part.float()


def attention_received(
    queries: Tensor,
    keys: Tensor,
    *,
    scaling: float | None = None,
    mask: Tensor | None = None,
    forgetting: float = 1.0,
    normalize: bool = False,
    per_kv_head: bool = True,
    chunk: int = 256,
) -> Tensor:
    """Weighted sum over query rows of the softmax attention each key receives.

    ``queries [B, H, q, D]`` are the *last* ``q`` query rows of the sequence, ``keys [B, Hkv, T, D]``
    all keys (``H`` a multiple of ``Hkv``: grouped-query attention). ``mask`` is the model's own
    attention mask for those rows (boolean, True = may attend, or additive float), ``[B|1, H|1, q, T]``;
    ``None`` means plain causal. Row ``i`` is weighted by ``forgetting ** (q - 1 - i)``.
    ``normalize`` divides each key's total by the summed weight of the rows that could see it (mean
    attention rather than a sum that favours early keys). Returns ``[B, Hkv, T]`` (mean over each
    group's query heads) or ``[B, H, T]`` when ``per_kv_head`` is False.
    """
    batch, heads, n_queries, dim = queries.shape
    kv_heads, n_keys = keys.shape[1], keys.shape[2]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads are not a multiple of {kv_heads} key heads")
    if not 0.0 < forgetting <= 1.0:
        raise ValueError(f"forgetting factor must be in (0, 1], got {forgetting}")
    scale = scaling if scaling is not None else 1.0 / math.sqrt(dim)
    group = heads // kv_heads
    keys_full = keys.float().repeat_interleave(group, dim=1)  # [B, H, T, D]
    weights = forgetting ** torch.arange(n_queries - 1, -1, -1, dtype=torch.float32, device=queries.device)
    total = torch.zeros(batch, heads, n_keys, device=queries.device)
    seen = torch.zeros(batch, heads, n_keys, device=queries.device)
    for start in range(0, n_queries, chunk):
        rows = slice(start, min(start + chunk, n_queries))
        logits = queries[:, :, rows].float() @ keys_full.transpose(-1, -2) * scale
        logits = logits + _row_mask(mask, rows, n_queries, n_keys, queries.device)
        probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # fully masked rows (padding) give 0
        row_w = weights[rows][None, None, :, None]
        total += (probs * row_w).sum(2)
        if normalize:
            seen += (torch.isfinite(logits).float() * row_w).sum(2)
    if normalize:
        total = total / seen.clamp_min(1e-12)
    if per_kv_head:
        total = total.view(batch, kv_heads, group, n_keys).mean(2)
    return total


def observation_window(
    queries: Tensor,
    keys: Tensor,
    window: int,
    *,
    scaling: float | None = None,
    mask: Tensor | None = None,
    per_kv_head: bool = True,
) -> Tensor:
    """SnapKV's score: attention received from the last ``window`` of the given query rows.

    Arguments as in :func:`attention_received`; ``mask`` covers the same rows as ``queries``.
    """
    if window < 1:
        raise ValueError(f"observation window must be at least 1 query, got {window}")
    rows = slice(max(0, queries.shape[2] - window), None)
    return attention_received(
        queries[:, :, rows],
        keys,
        scaling=scaling,
        mask=None if mask is None else mask[..., rows, :],
        per_kv_head=per_kv_head,
    )


def pool_scores(scores: Tensor, kernel: int) -> Tensor:
    """Average each score with its neighbours (``kernel`` wide, odd), ``[..., T] -> [..., T]``.

    SnapKV (Li et al., 2024) pools the observation-window attention so that the neighbours of a strongly
    attended token are kept with it and a fact is not cut in the middle.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"pooling kernel must be a positive odd number, got {kernel}")
    if kernel == 1:
        return scores
    shape = scores.shape
    flat = scores.float().reshape(-1, 1, shape[-1])
    pooled = torch.nn.functional.avg_pool1d(flat, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    return pooled.reshape(shape)


def reconstruction_attention(
    queries: Tensor, keys: Tensor, probe_keys: Tensor, *, scaling: float | None = None, chunk: int = 256
) -> Tensor:
    """The largest attention weight each context key receives from the query rows of a probe pass.

    Kim et al., 2025, "KVzip: Query-Agnostic KV Cache Compression with Context Reconstruction": the
    model is asked to repeat its context; a key that some reconstruction query (any head of its group)
    attends to strongly is needed to reproduce the context, whatever the question will be. ``queries
    [H, m, D]`` are the probe's rows, ``keys [Hkv, T, D]`` the context's cache and ``probe_keys [Hkv, m,
    D]`` the probe's own keys (attended causally). The softmax runs over context and probe keys, as in
    the model's own attention. Returns ``[Hkv, T]``: max over probe rows and over each group's heads.
    """
    heads, m, dim = queries.shape
    kv_heads, n = keys.shape[0], keys.shape[1]
    if heads % kv_heads or probe_keys.shape[:2] != (kv_heads, m):
        raise ValueError(
            f"probe shapes do not match: queries {tuple(queries.shape)}, probe keys {tuple(probe_keys.shape)}"
        )
    scale = scaling if scaling is not None else 1.0 / math.sqrt(dim)
    group = heads // kv_heads
    both = torch.cat([keys, probe_keys], 1).float().repeat_interleave(group, dim=0)  # [H, T + m, D]
    best = torch.zeros(heads, n, device=queries.device)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        logits = queries[:, start:stop].float() @ both.transpose(-1, -2) * scale  # [H, r, T + m]
        row = torch.arange(start, stop, device=queries.device)[:, None]
        future = torch.arange(m, device=queries.device)[None, :] > row  # probe keys after each row
        logits[:, :, n:] = logits[:, :, n:].masked_fill(future, float("-inf"))
        best = torch.maximum(best, torch.softmax(logits, dim=-1)[:, :, :n].amax(1))
    return best.view(kv_heads, group, n).amax(1)


def attend_and_reconstruct(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    n: int,
    *,
    scaling: float,
    chunk: int | None = None,
    products: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """A probe pass's attention and KVzip's reconstruction scores from one product over the context keys.

    ``queries [H, m, D]`` are the probe rows (positions ``n`` .. ``n + m - 1``), ``keys``/``values [Hkv, n + m,
    D]`` the context's ``n`` then the probe's own ``m`` (causal among themselves). The rows' own keys go through
    :func:`attention_with_lse` with no context (the fused kernel, causal). Over the context keys, each chunk of
    ``chunk`` rows (and their GQA group's heads) forms its logits ``S`` once; ``exp(S − rowmax)`` then gives the
    output over the context (one product with the values) and, once the row's log-sum-exp over both parts is
    known, every context key's weight, whose largest over the rows is the score: one ``[rows, n]`` matrix per
    chunk, kept small (64 rows on the CPU) so it stays in cache. Returns the output ``[H, m, D]`` and ``[Hkv,
    n]``, the same scores as ``reconstruction_attention(queries, keys[:, :n], keys[:, n:])``.

    ``products=torch.bfloat16``: the rows' causal attention over their own keys and the two products over the
    context keys (logits, then weights x values) take bf16 inputs (AMX on CPUs, tensor cores on GPUs; at 2k
    probe rows the fused causal kernel runs 2.8x faster in bf16 here); the softmax over the context, its sums,
    the max, the log-sum-exps and the outputs stay float32.
    """
    heads, m, _ = queries.shape
    kv_heads, total = keys.shape[0], keys.shape[1]
    if heads % kv_heads or total != n + m or values.shape[:2] != keys.shape[:2]:
        raise ValueError(f"probe shapes do not match: queries {tuple(queries.shape)}, keys {tuple(keys.shape)}")
    with torch.autocast(queries.device.type, enabled=False):  # float32 but for the products asked in bf16
        out, best = _attend_and_reconstruct(queries.float(), keys.float(), values.float(), n, scaling, chunk, products)
    return out.to(queries.dtype), best


def _attend_and_reconstruct(
    queries: Tensor, keys: Tensor, values: Tensor, n: int, scaling: float, chunk: int | None, products: torch.dtype
) -> tuple[Tensor, Tensor]:
    """:func:`attend_and_reconstruct` on float32 inputs, outside autocast."""
    heads, m, dim = queries.shape
    kv_heads = keys.shape[0]
    own_keys, own_values = keys[:, n:].to(products), values[:, n:].to(products)
    own, own_lse = attention_with_lse(queries.to(products), own_keys, own_values, 0, scaling=scaling)
    own, own_lse = own.float(), own_lse.float()  # no-ops in float32
    best = torch.zeros(kv_heads, n, device=queries.device)
    if n == 0:
        return own, best
    step = chunk or (64 if queries.device.type == "cpu" else 1024)
    group = heads // kv_heads
    grouped = queries.reshape(kv_heads, group, m, dim)
    own_out = own.reshape(kv_heads, group, m, dim)
    own_lse = own_lse.reshape(kv_heads, group, m)
    context = keys[:, :n].transpose(-1, -2).to(products)  # [Hkv, D, n]
    context_values = values[:, :n].to(products)
    out = torch.empty(kv_heads, group, m, dim, device=queries.device)
    for start in range(0, m, step):
        stop = min(start + step, m)
        rows = group * (stop - start)
        q = grouped[:, :, start:stop].reshape(kv_heads, rows, dim) * scaling  # scaled here: m x D, not m x n
        weights = torch.bmm(q.to(products), context).float()  # [Hkv, rows, n]: logits, then exp(logit - rowmax)
        peak = weights.amax(-1, keepdim=True)
        weights.sub_(peak).exp_()
        context_lse = peak + weights.sum(-1, keepdim=True).log()
        part_lse = own_lse[:, :, start:stop].reshape(kv_heads, rows, 1)
        lse = torch.logaddexp(context_lse, part_lse)
        scale = (peak - lse).exp()  # exp(logit - rowmax) * scale = the row's softmax weight on a context key
        part = own_out[:, :, start:stop].reshape(kv_heads, rows, dim)
        mixed = torch.bmm(weights.to(products), context_values).float()  # float32: .to / .float() are no-ops
        mixed.mul_(scale).add_(part * (part_lse - lse).exp())
        out[:, :, start:stop] = mixed.reshape(kv_heads, group, stop - start, dim)
        best = torch.maximum(best, weights.mul_(scale).amax(1))
    return out.reshape(heads, m, dim), best


def cpu_flash_kernel(tensor: Tensor) -> Any:
    """Torch's fused CPU flash-attention op (it returns each row's log-sum-exp too) for ``tensor``'s device, or
    None off the CPU or in a torch without it."""
    if tensor.device.type != "cpu":
        return None
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def merge_by_lse(out: Tensor, lse: Tensor, more: Tensor, more_lse: Tensor) -> tuple[Tensor, Tensor]:
    """Two attention outputs over disjoint key sets (``[..., D]``), merged by their log-sum-exps (``[...]``):
    the output and the log-sum-exp over both sets."""
    total = torch.logaddexp(lse, more_lse)
    return out * (lse - total).exp()[..., None] + more * (more_lse - total).exp()[..., None], total


def attention_with_lse(
    queries: Tensor, keys: Tensor, values: Tensor, n: int, *, scaling: float, fused: bool = True
) -> tuple[Tensor, Tensor]:
    """Attention of probe rows over ``n`` context keys plus their own (causal) and each row's log-sum-exp.

    On the CPU torch's fused flash kernel returns both (GQA without repeating keys), called twice without a mask
    (a mask takes the kernel's slow path): once over the context keys, once over the rows' own keys with its
    causal flag (square, so aligned), the two merged by their log-sum-exps (``n = 0``: the second call alone).
    Elsewhere, or if that kernel is missing (or ``fused=False``), the same is computed explicitly. Returns
    ``([H, m, D], [H, m])``.
    """
    heads, m, _ = queries.shape
    kernel = cpu_flash_kernel(queries)
    if fused and kernel is not None and m > 0:
        try:  # two unmasked calls (the rows' own keys, causal and aligned; the context), merged by their lse
            out_p, lse_p = kernel(queries[None], keys[None, :, n:], values[None, :, n:], 0.0, True, scale=scaling)
            if n == 0:
                return out_p[0].to(queries.dtype), lse_p[0]
            out_c, lse_c = kernel(queries[None], keys[None, :, :n], values[None, :, :n], 0.0, False, scale=scaling)
            out, lse = merge_by_lse(out_c, lse_c, out_p, lse_p)
            return out[0].to(queries.dtype), lse[0]
        except RuntimeError:  # a dtype or shape the kernel does not take: the explicit way below
            pass
    future = torch.ones(m, m, dtype=torch.bool, device=queries.device).triu(1)
    mask = torch.zeros(m, n + m, dtype=queries.dtype, device=queries.device)
    mask[:, n:] = mask[:, n:].masked_fill(future, float("-inf"))
    group = heads // keys.shape[0]
    logits = (queries.float() @ keys.float().repeat_interleave(group, 0).transpose(-1, -2)) * scaling + mask.float()
    lse = torch.logsumexp(logits, -1)
    weights = torch.exp(logits - lse[..., None])
    return (weights @ values.float().repeat_interleave(group, 0)).to(queries.dtype), lse
