"""Visual-token selection for any VLM that inserts image features at image-token positions, in the LLM's space.

``prune_inputs(model, input_ids, attention_mask, "divprune", keep=0.25, pixel_values=..., **image_inputs)`` takes
the inputs the model's own processor made (LLaVA, LLaVA-OneVision with its any-resolution packing and newline
tokens, Idefics3 / SmolVLM with its pixel-shuffle connector and image grid), asks the model for its image features
(``get_image_features``: what it would scatter into the image-token positions), lets the method choose among them
per row, and returns the prompts without the other image tokens, left-padded, ready for
``model.generate(inputs_embeds=..., attention_mask=...)`` or :func:`tokensift.vision.fastv.fastv_prefill`
(FastV works on any of them). Only methods that read the projected tokens and the text run here (``divprune``,
``mmtok``, ``random``, and ``fastv`` inside the LLM); those that read the vision tower's [CLS] attention run on
LLaVA through :mod:`tokensift.vision.pipeline`, where the tower's output maps one to one onto the image tokens.
Models whose positions follow the image grid (Qwen2-VL's multimodal rotary positions, M-RoPE) keep them: the
positions of the whole prompt are computed first (the model's ``get_rope_index``), and the kept tokens carry their
own (``Prepared.position_ids``, ``[3, B, L]``), so a kept patch sits exactly where it sat in the full image; pass
them to ``model.generate(..., position_ids=prepared.position_ids)`` (``fastv_prefill`` uses them itself).
Images only: a prompt with videos is refused.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from tokensift.errors import InputError, MethodUnsupportedError, ModelError
from tokensift.methods import resolve
from tokensift.reduce.merge import assign_slots
from tokensift.vision.methods.base import VisionContext, VisionMethod
from tokensift.vision.pipeline import Prepared, budget, language_parts, left_pad


def image_token_id(model: torch.nn.Module) -> int:
    """The id of the placeholder token image features replace."""
    config = getattr(model, "config", None)
    found = getattr(config, "image_token_id", None)
    if found is None:
        found = getattr(config, "image_token_index", None)
    if not isinstance(found, int):
        raise ModelError(f"{type(model).__name__} has no image token id in its config")
    return found


def _image_features(model: torch.nn.Module, counts: list[int], image_inputs: dict[str, Any]) -> list[Tensor]:
    """Per row, ``[n_b, E]``: the features the model puts at that row's image tokens, in order."""
    getter = getattr(model, "get_image_features", None)
    if getter is None:
        raise ModelError(f"{type(model).__name__} has no get_image_features")
    out = getter(**image_inputs)
    pooled = getattr(out, "pooler_output", out)
    parts = list(pooled) if isinstance(pooled, list | tuple) else [pooled]
    flat = torch.cat([p.reshape(-1, p.shape[-1]) for p in parts])
    if flat.shape[0] != sum(counts):
        raise InputError(f"the images give {flat.shape[0]} features but the prompts hold {sum(counts)} image tokens")
    return list(flat.split(counts))


@torch.no_grad()
def prune_inputs(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    method: str | VisionMethod | None = None,
    *,
    keep: float | None = None,
    keep_tokens: int | None = None,
    **image_inputs: Any,
) -> Prepared:
    """Choose image tokens per row among the model's own image features; see the module docstring.

    ``image_inputs`` are what ``get_image_features`` takes (``pixel_values``, and ``image_sizes`` or
    ``pixel_attention_mask`` where the model needs them). Rows keep ``keep`` of their own image tokens (or
    ``keep_tokens``), so rows with images of different sizes keep different counts. A method acting inside the
    language model (FastV) leaves the image tokens here: pass the result to ``fastv_prefill``.
    """
    chosen = resolve("vision", method) if isinstance(method, str) else method
    inside = chosen is not None and chosen.stage == "tower"
    if chosen is not None and (inside or getattr(type(chosen), "needs_tower", False)):
        what = "reduces tokens inside the vision tower" if inside else "reads the vision tower's [CLS] attention"
        raise MethodUnsupportedError(
            f"{chosen.name} {what}, which only the LLaVA path provides (tokensift.vision.prepare); here: divprune, "
            "mmtok, random, or fastv inside the language model"
        )
    parts = language_parts(model)
    token = image_token_id(model)
    if input_ids.dim() != 2:
        raise InputError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    is_image = (input_ids == token) & mask.bool()
    counts = [int(c) for c in is_image.sum(dim=1).tolist()]
    if min(counts) == 0:
        raise InputError("every row needs image tokens; a row has none")
    token_types = image_inputs.pop("mm_token_type_ids", None)
    position_ids = _grid_positions(model, input_ids, mask, is_image, token_types, image_inputs)
    started = time.perf_counter()
    features = _image_features(model, counts, image_inputs)
    seconds = {"vision": time.perf_counter() - started}
    started = time.perf_counter()
    embeds = parts.embed(input_ids)
    rows, images, kept_counts, statuses, row_positions = [], [], [], [], []
    before = chosen is not None and chosen.stage == "before"
    for row, feats in enumerate(features):
        n = feats.shape[0]
        k = budget(n, keep, keep_tokens) if before else n
        target = torch.arange(n, device=feats.device)[None]
        if before and chosen is not None:
            text_positions = mask[row].bool() & ~is_image[row]
            text = embeds[row, text_positions][None]
            ctx = VisionContext(
                features=feats[None],
                projected=feats[None],
                keep=torch.tensor([k], device=feats.device),
                grid=(1, n),
                text=text,
                text_mask=torch.ones(text.shape[:2], dtype=torch.bool, device=feats.device),
            )
            target = chosen.plan(ctx).target
        if bool(((target >= 0) & (target != torch.arange(n, device=feats.device))).any()):
            raise MethodUnsupportedError(f"{chosen.name if chosen else ''} merges tokens; here tokens are only kept")
        stays = assign_slots(target, torch.ones_like(target, dtype=torch.bool))[0][0] >= 0
        statuses.append(torch.where(stays, 0, 2))
        kept_counts.append(int(stays.sum()))
        sequence = embeds[row].clone()
        positions = torch.nonzero(is_image[row]).flatten()
        sequence[positions] = feats.to(sequence.dtype)
        keep_mask = mask[row].bool().clone()
        keep_mask[positions[~stays]] = False
        rows.append(sequence[keep_mask])
        images.append(is_image[row][keep_mask])
        if position_ids is not None:
            row_positions.append(position_ids[:, row, keep_mask])
    out, out_mask, image_mask = left_pad(rows, images)
    kept_positions = None
    if position_ids is not None:  # left-padded like the rows (padding at position 0, masked)
        kept_positions = position_ids.new_zeros(3, len(rows), out.shape[1])
        for row, found in enumerate(row_positions):
            kept_positions[:, row, out.shape[1] - found.shape[1] :] = found
    seconds["select"] = time.perf_counter() - started
    widest = max(counts)
    status = torch.full((len(rows), widest), 2, dtype=torch.long, device=embeds.device)
    for row, st in enumerate(statuses):
        status[row, : st.shape[0]] = st
    return Prepared(out, out_mask, image_mask, widest, kept_counts, status, (1, widest), seconds, kept_positions)


def _grid_positions(
    model: torch.nn.Module,
    input_ids: Tensor,
    mask: Tensor,
    is_image: Tensor,
    token_types: Tensor | None,
    image_inputs: dict[str, Any],
) -> Tensor | None:
    """``[3, B, L]`` the whole prompts' multimodal rotary positions for a model that has them (Qwen2-VL and its
    kin: ``get_rope_index``), else None."""
    inner = getattr(model, "model", model)
    rope_index = getattr(inner, "get_rope_index", None)
    if rope_index is None:
        return None
    if image_inputs.get("pixel_values_videos") is not None or image_inputs.get("video_grid_thw") is not None:
        raise InputError("visual-token selection takes images; this prompt has videos")
    if image_inputs.get("image_grid_thw") is None:
        raise InputError(f"{type(model).__name__} needs image_grid_thw (its processor returns it with the pixels)")
    types = is_image.int() if token_types is None else token_types
    positions, _ = rope_index(
        input_ids, mm_token_type_ids=types, image_grid_thw=image_inputs["image_grid_thw"], attention_mask=mask
    )
    return positions
