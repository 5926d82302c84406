"""The language-model side of a VLM: prefill (plain, or FastV's pruning inside it) and greedy decoding.

FastV (arXiv:2403.06764) without forking the model: a first pass runs the prompt through the first K decoder
layers, where the attention router reads the K-th layer's queries and keys (the attention the image tokens
receive, mean over heads, from the last prompt token or from every query that sees them) and a forward pre-hook
on the next layer takes the hidden states and stops the pass. The second pass runs the kept tokens at their
original positions; a pre-hook swaps the input of layer K + 1 for the first pass's states (computed with every
image token in view), and the first K layers keep the first pass's cache cut to the kept tokens — so every later
layer, and every decoding step, sees only the kept tokens.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from tokensift.errors import InputError, ParameterError
from tokensift.hooks import AttentionCall, Route, attention_modules
from tokensift.kv.filter import decoder_layer
from tokensift.scores import attention_received
from tokensift.select.rowwise import topk_mask
from tokensift.vision.methods.base import VisionMethod
from tokensift.vision.pipeline import Prepared, budget, language_parts


class _Stop(Exception):
    """Ends the first pass before layer K + 1."""


@dataclass
class Prefill:
    """A prefilled batch ready to decode."""

    cache: Any
    logits: Tensor
    """``[B, V]`` the next token's logits."""
    attention_mask: Tensor
    """``[B, L]`` over what the cache holds."""
    next_position: Tensor
    """``[B]`` position of the next token."""
    kept: list[int]
    """Image tokens each row's later layers see."""
    image_kept: Tensor | None = None
    """``[B, N]`` (FastV) which image tokens the layers after K see."""


def _new_cache(model: torch.nn.Module) -> DynamicCache:
    config: Any = model.config
    return DynamicCache(config=config.get_text_config())


def _positions(prepared: Prepared) -> Tensor:
    """``[B, L]`` positions counting each row's real tokens, or the model's own ``[3, B, L]`` (M-RoPE)."""
    if prepared.position_ids is not None:
        return prepared.position_ids
    return (prepared.attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)


def _next(positions: Tensor) -> Tensor:
    """``[B]`` the position of the token after the prompt (M-RoPE: one past the prompt's largest)."""
    last = positions[..., -1]
    return (last if positions.dim() == 2 else last.amax(dim=0)) + 1


def _run(model: torch.nn.Module, embeds: Tensor, mask: Tensor, positions: Tensor, cache: Any) -> Tensor:
    parts = language_parts(model)
    hidden = parts.language(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
    ).last_hidden_state
    return parts.head(hidden[:, -1])


@torch.no_grad()
def fastv_prefill(
    model: torch.nn.Module,
    prepared: Prepared,
    method: VisionMethod | None,
    *,
    keep: float | None = None,
    keep_tokens: int | None = None,
) -> Prefill:
    """Prefill ``prepared``; with FastV (``method``) the image tokens are cut after its first K layers."""
    embeds, mask = prepared.inputs_embeds, prepared.attention_mask
    positions = _positions(prepared)
    if method is None:
        cache = _new_cache(model)
        logits = _run(model, embeds, mask, positions, cache)
        return Prefill(cache, logits, mask, _next(positions), list(prepared.kept))
    parts = language_parts(model)
    layer = int(getattr(method, "layer", 2))  # K: layers 0..K-1 see every image token
    last_only = getattr(method, "query", "last") == "last"
    modules = attention_modules(parts.language)
    if not 1 <= layer < len(modules):
        raise ParameterError(f"fastv: layer must be in 1..{len(modules) - 1}, got {layer}", option="layer")
    batch = mask.shape[0]
    image = prepared.image_mask
    counts = set(image.sum(dim=1).tolist())
    if len(counts) != 1:
        raise InputError("fastv needs the same number of image tokens in every row of a batch")
    k = budget(int(counts.pop()), keep, keep_tokens)
    scores: list[Tensor] = []
    hidden: list[Tensor] = []

    def score(call: AttentionCall) -> None:
        query, call_mask = call.query, call.mask
        if last_only:  # the prompt's last token (rows are left-padded: the last position of every row)
            query = query[:, :, -1:]
            call_mask = None if call_mask is None else call_mask[..., -1:, :]
        received = attention_received(
            query, call.key, scaling=call.scaling, mask=call_mask, normalize=True, per_kv_head=False
        )
        scores.append(received.mean(dim=1))

    def capture(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])
        raise _Stop

    first = _new_cache(model)
    route = Route(parts.language, {modules[layer - 1]: score})
    route.hook(decoder_layer(parts.language, layer), capture, pre=True)
    with route, contextlib.suppress(_Stop):
        parts.language(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=first, use_cache=True
        )
    chosen = topk_mask(scores[0], torch.full((batch,), k, device=mask.device), valid=image)
    kept = (~image | chosen).nonzero()[:, 1].view(batch, -1)  # same count per row: every row has one image

    def gather(x: Tensor) -> Tensor:
        index = kept.view(batch, -1, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
        return x.gather(1, index)

    states = gather(hidden[0])

    def swap(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": states}
        return (states, *args[1:]), kwargs

    cache = _new_cache(model)
    sub_mask = gather(mask)
    if positions.dim() == 3:  # M-RoPE: [3, B, L]
        sub_positions = positions.gather(2, kept[None].expand(positions.shape[0], -1, -1))
    else:
        sub_positions = gather(positions)
    with Route(parts.language, {}) as second:
        second.hook(decoder_layer(parts.language, layer), swap, pre=True)
        logits = _run(model, gather(embeds), sub_mask, sub_positions, cache)
    for i in range(layer):  # the first K layers: the first pass's cache (it saw every image token), cut
        early: Any = first.layers[i]
        index = kept[:, None, :, None].expand(-1, early.keys.shape[1], -1, early.keys.shape[-1])
        late: Any = cache.layers[i]
        late.keys, late.values = early.keys.gather(2, index), early.values.gather(2, index)
    image_kept = chosen[image].view(batch, -1)
    return Prefill(cache, logits, sub_mask, _next(positions), [k] * batch, image_kept)


@torch.no_grad()
def greedy(model: torch.nn.Module, prefill: Prefill, max_new_tokens: int, eos: list[int]) -> Tensor:
    """``[B, T]`` greedy continuation from ``prefill`` (rows that ended are padded with their end token)."""
    parts = language_parts(model)
    logits, mask, position = prefill.logits, prefill.attention_mask, prefill.next_position
    stop = torch.tensor(eos, device=logits.device)
    out: list[Tensor] = []
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    for step in range(max_new_tokens):
        token = logits.argmax(dim=-1)
        token = torch.where(done, out[-1] if out else token, token)
        out.append(token)
        done |= torch.isin(token, stop)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        logits = _run(model, parts.embed(token)[:, None], mask, position[:, None], prefill.cache)
        position = position + 1
    return torch.stack(out, dim=1)
