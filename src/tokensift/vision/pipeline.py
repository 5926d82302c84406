"""Visual-token selection for an unmodified Hugging Face LLaVA-family VLM, before and inside its language model.

``prepare(model, processor, images, questions, method, keep=0.25)`` runs the vision tower once (the attention
router captures the queries and keys of the layers the method reads; nothing of the model is patched), asks the
method for a plan over the patch tokens, merges or drops them in the vision tower's feature space, projects what
is left with the model's own projector and lays out one prompt per row with only the kept image tokens
(left-padded, so rows may keep different numbers). ``model.generate(inputs_embeds=..., attention_mask=...)``
then runs as usual; :func:`tokensift.vision.qa.answer` prefills, decodes greedily and times both. FastV, which
prunes inside the language model, runs in :mod:`tokensift.vision.fastv`; ``tower`` reduces the tokens inside the
vision tower itself (an encoder method attached for the one pass), so the tower hands over exactly the budget.

Supported: ``LlavaForConditionalGeneration`` with any vision tower whose attention goes through transformers'
AttentionInterface and whose first token is a [CLS] (CLIP, SigLIP-free ViTs, DINOv2), one image per prompt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tokensift.encoder.layout import find_layout
from tokensift.errors import InputError, MethodUnsupportedError, ModelError, ParameterError
from tokensift.hooks import AttentionCall, Route
from tokensift.methods import resolve
from tokensift.reduce.merge import assign_slots, scatter_mean
from tokensift.vision.methods.base import VisionContext, VisionMethod
from tokensift.vision.methods.tower import Tower
from tokensift.vision.prompt import PREFIX, SUFFIX


@dataclass(frozen=True)
class VLMParts:
    """The parts of a LLaVA-family model the pipeline uses."""

    vision: torch.nn.Module
    projector: torch.nn.Module
    language: torch.nn.Module
    embed: torch.nn.Module
    image_token_id: int
    feature_layer: int
    """Index of the vision layer whose output feeds the projector."""
    n_layers: int
    drop_cls: bool


@dataclass(frozen=True)
class LanguageParts:
    """The language model inside a VLM (LLaVA, LLaVA-OneVision, Idefics3 / SmolVLM …)."""

    language: torch.nn.Module
    embed: torch.nn.Module
    head: torch.nn.Module


def language_parts(model: torch.nn.Module) -> LanguageParts:
    """The language model, its input embeddings and its output head; :class:`ModelError` when there is none."""
    inner = getattr(model, "model", model)
    language = getattr(inner, "language_model", None) or getattr(inner, "text_model", None)
    head = getattr(model, "lm_head", None)
    if language is None or head is None:
        raise ModelError(
            f"{type(model).__name__} is not a vision-language model with a language model and an output head "
            "(LlavaForConditionalGeneration, LlavaOnevisionForConditionalGeneration, "
            "Idefics3ForConditionalGeneration …)"
        )
    return LanguageParts(language, language.get_input_embeddings(), head)


def vlm_parts(model: torch.nn.Module) -> VLMParts:
    """Recognise a LLaVA-family model; :class:`ModelError` says what is supported otherwise."""
    inner = getattr(model, "model", model)
    config = getattr(model, "config", None)
    vision = getattr(inner, "vision_tower", None)
    projector = getattr(inner, "multi_modal_projector", None)
    language = getattr(inner, "language_model", None)
    if config is None or vision is None or projector is None or language is None:
        raise ModelError(
            f"{type(model).__name__} is not a LLaVA-family VLM (vision_tower + multi_modal_projector + "
            "language_model); visual-token selection supports LlavaForConditionalGeneration"
        )
    layer = getattr(config, "vision_feature_layer", -1)
    if not isinstance(layer, int):
        raise ModelError("visual-token selection needs one vision feature layer, not a list")
    n_layers = int(getattr(config.vision_config, "num_hidden_layers", 0))
    strategy = getattr(config, "vision_feature_select_strategy", "default")
    return VLMParts(
        vision=vision,
        projector=projector,
        language=language,
        embed=language.get_input_embeddings(),
        image_token_id=int(config.image_token_id),
        feature_layer=(layer % (n_layers + 1)) - 1,
        n_layers=n_layers,
        drop_cls=strategy == "default",
    )


@dataclass
class Prepared:
    """One batch laid out for the language model."""

    inputs_embeds: Tensor
    """``[B, L, E]`` left-padded prompts with only the kept image tokens."""
    attention_mask: Tensor
    """``[B, L]``."""
    image_mask: Tensor
    """``[B, L]`` where the (kept) image tokens sit in ``inputs_embeds``."""
    visual_tokens: int
    """Image tokens per image before selection."""
    kept: list[int]
    """Image tokens each row kept."""
    status: Tensor
    """``[B, N]`` per patch: 0 kept, 1 merged into a kept token, 2 dropped."""
    grid: tuple[int, int]
    seconds: dict[str, float] = field(default_factory=dict)
    """``vision`` (tower + signals), ``select`` (the method), ``layout`` (projector and prompts)."""
    position_ids: Tensor | None = None
    """``[3, B, L]`` the kept tokens' original multimodal rotary positions (Qwen2-VL's M-RoPE: time, height,
    width); pass them on (``model.generate(..., position_ids=...)``). None: positions count the kept tokens."""


def budget(n: int, keep: float | None, keep_tokens: int | None) -> int:
    """Image tokens to keep of ``n``: a share ``keep`` (rounded, at least 1) or a count; all when neither."""
    if keep is not None and keep_tokens is not None:
        raise ParameterError("give keep or keep_tokens, not both", option="keep")
    if keep_tokens is not None:
        if keep_tokens < 1:
            raise ParameterError(f"keep_tokens must be at least 1, got {keep_tokens}", option="keep_tokens")
        return min(n, keep_tokens)
    if keep is None:
        return n
    if not 0.0 < keep <= 1.0:
        raise ParameterError(f"keep must be in (0, 1], got {keep}", option="keep")
    return max(1, min(n, round(keep * n)))


def _signals(
    parts: VLMParts, pixel_values: Tensor, layers: list[int]
) -> tuple[Tensor, dict[int, Tensor], dict[int, Tensor], dict[int, Tensor]]:
    """Run the vision tower once; the patch features and, per layer, [CLS] attention, keys and attention received."""
    modules = find_layout(parts.vision).attention
    captured: dict[int, tuple[Tensor, Tensor, float]] = {}

    def capture(layer: int) -> Any:
        def handle(call: AttentionCall) -> None:
            captured[layer] = (call.query, call.key, call.scaling)

        return handle

    with Route(parts.vision, {modules[i]: capture(i) for i in layers}):
        out = parts.vision(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
    start = 1 if parts.drop_cls else 0
    features = out.hidden_states[parts.feature_layer + 1][:, start:]
    cls: dict[int, Tensor] = {}
    keys: dict[int, Tensor] = {}
    received: dict[int, Tensor] = {}
    for layer, (query, key, scaling) in captured.items():
        probs = torch.softmax(query.float() @ key.float().transpose(-1, -2) * scaling, dim=-1)  # [B, H, T, T]
        cls[layer] = probs[:, :, 0, 1:].mean(dim=1)[:, -features.shape[1] :]
        received[layer] = probs.mean(dim=(1, 2))[:, 1:][:, -features.shape[1] :]
        keys[layer] = key.float().mean(dim=1)[:, 1:][:, -features.shape[1] :]
    return features, cls, keys, received


def _grid(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    return (side, side) if side * side == n else (1, n)


def _text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def pixel_values(processor: Any, images: Sequence[Any]) -> Tensor:
    """The image processor's tensor for ``images`` (PIL images)."""
    image_processor = getattr(processor, "image_processor", processor)
    return image_processor(list(images), return_tensors="pt")["pixel_values"]


@torch.no_grad()
def prepare(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[Any],
    questions: Sequence[str],
    method: str | VisionMethod | None = None,
    *,
    keep: float | None = None,
    keep_tokens: int | None = None,
    keep_per_row: Sequence[int] | None = None,
    **options: Any,
) -> Prepared:
    """Select visual tokens for ``images`` (one per question) and lay out the prompts; see the module docstring.

    ``method=None`` keeps every token (the uncompressed model, through the same path). The budget is ``keep``
    (share of the image tokens), ``keep_tokens`` or one count per row (``keep_per_row``). A method acting
    inside the language model (``stage == "llm"``) is laid out uncompressed here: run it with
    :func:`tokensift.vision.fastv.fastv_prefill` (or :func:`answer`, which does).
    """
    if len(images) != len(questions) or not images:
        raise InputError(f"give one question per image: {len(images)} images, {len(questions)} questions")
    parts = vlm_parts(model)
    chosen = resolve("vision", method, **options) if isinstance(method, str) else method
    if chosen is None and options:
        raise ParameterError(f"options {sorted(options)} given without a method")
    device = next(model.parameters()).device
    tokenizer = processor.tokenizer
    started = time.perf_counter()
    pixels = pixel_values(processor, images).to(device=device, dtype=next(parts.vision.parameters()).dtype)
    if isinstance(chosen, Tower):  # reduced inside the tower: one pass per distinct budget
        n = _patches(parts, pixels)
        counts = _counts(n, len(images), keep, keep_tokens, keep_per_row)
        tokens: Tensor | None = None
        status = torch.full((len(images), n), 2, dtype=torch.long, device=device)
        for count in sorted(set(counts)):
            group = torch.tensor([i for i, c in enumerate(counts) if c == count], device=device)
            reduced, status[group] = _reduce_in_tower(parts, pixels[group], chosen, n, count)
            projected = parts.projector(reduced)
            if tokens is None:
                tokens = projected.new_zeros(len(images), max(counts), projected.shape[-1])
            tokens[group, :count] = projected
        assert tokens is not None
        seconds = {"vision": time.perf_counter() - started, "select": 0.0}
        started = time.perf_counter()
        embeds, mask, image = _layout(parts, tokenizer, tokens, counts, questions)
        seconds["layout"] = time.perf_counter() - started
        return Prepared(embeds, mask, image, n, counts, status, _grid(n), seconds)
    before = chosen is not None and chosen.stage == "before"
    layers = chosen.signal_layers(parts.n_layers, parts.feature_layer) if before and chosen is not None else []
    features, cls, keys, received = _signals(parts, pixels, layers)
    batch, n = features.shape[:2]
    grid = _grid(n)
    seconds = {"vision": time.perf_counter() - started}
    counts = _counts(n, batch, keep, keep_tokens, keep_per_row)
    started = time.perf_counter()
    projected = parts.projector(features)
    target = torch.arange(n, device=device).expand(batch, n)
    weights = torch.ones(batch, n, device=device)
    text = text_mask = None
    if before and chosen is not None:
        if chosen.text_aware:
            rows = [_text(tokenizer, q) or [tokenizer.eos_token_id] for q in questions]
            width = max(map(len, rows))
            ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], device=device)
            text = parts.embed(ids)
            text_mask = torch.tensor([[i < len(r) for i in range(width)] for r in rows], device=device)
        ctx = VisionContext(
            features=features,
            projected=projected,
            keep=torch.tensor(counts, device=device),
            grid=grid,
            cls_attention=cls,
            keys=keys,
            received=received,
            text=text,
            text_mask=text_mask,
            n_layers=parts.n_layers,
            feature_layer=parts.feature_layer,
        )
        plan = chosen.plan(ctx)
        target = plan.target
        if plan.weights is not None:
            weights = plan.weights
    seconds["select"] = time.perf_counter() - started
    started = time.perf_counter()
    valid = torch.ones(batch, n, dtype=torch.bool, device=device)
    slot, kept_mask = assign_slots(target, valid)
    positions = torch.arange(n, device=device)
    stays = target == positions
    status = torch.where(stays, 0, torch.where(target >= 0, 1, 2))
    tokens = parts.projector(scatter_mean(features, slot, kept_mask.shape[1], weights))
    kept = kept_mask.sum(dim=1).tolist()
    embeds, mask, image = _layout(parts, tokenizer, tokens, kept, questions)
    seconds["layout"] = time.perf_counter() - started
    return Prepared(embeds, mask, image, n, kept, status, grid, seconds)


def _counts(
    n: int, batch: int, keep: float | None, keep_tokens: int | None, keep_per_row: Sequence[int] | None
) -> list[int]:
    """Image tokens each row keeps of its ``n``: one budget for all, or ``keep_per_row``."""
    if keep_per_row is None:
        return [budget(n, keep, keep_tokens)] * batch
    if len(keep_per_row) != batch:
        raise ParameterError(f"keep_per_row has {len(keep_per_row)} counts for {batch} rows", option="keep")
    return [budget(n, None, int(k)) for k in keep_per_row]


def _layout(
    parts: VLMParts, tokenizer: Any, tokens: Tensor, kept: Sequence[int], questions: Sequence[str]
) -> tuple[Tensor, Tensor, Tensor]:
    """The prompts (prefix, row ``b``'s first ``kept[b]`` image tokens, question), left-padded."""
    device = tokens.device
    prefix = _text(tokenizer, PREFIX)
    rows_embeds, spans = [], []
    for row, question in enumerate(questions):
        suffix = _text(tokenizer, SUFFIX.format(question=question.strip()))
        head = parts.embed(torch.tensor(prefix, device=device))
        tail = parts.embed(torch.tensor(suffix, device=device))
        rows_embeds.append(torch.cat([head, tokens[row, : kept[row]], tail]))
        spans.append((len(prefix), len(prefix) + kept[row]))
    flags = [torch.arange(r.shape[0], device=device) for r in rows_embeds]
    flags = [(f >= a) & (f < b) for f, (a, b) in zip(flags, spans, strict=True)]
    return left_pad(rows_embeds, flags)


def _patches(parts: VLMParts, pixels: Tensor) -> int:
    """Patch tokens the vision tower makes of ``pixels``."""
    size = getattr(parts.vision.config, "patch_size", None)
    if not isinstance(size, int):
        raise MethodUnsupportedError(f"{type(parts.vision).__name__} has no patch_size in its config")
    return (pixels.shape[-2] // size) * (pixels.shape[-1] // size)


def _reduce_in_tower(parts: VLMParts, pixels: Tensor, method: Tower, n: int, count: int) -> tuple[Tensor, Tensor]:
    """Run the vision tower with ``method``'s encoder method reducing its ``n`` patch tokens to ``count``.

    Returns the feature layer's patch tokens ``[B, count, Dv]`` and, per input patch ``[B, n]``, its status: 0 the
    first patch of an output token, 1 merged into one, 2 dropped.
    """
    from tokensift.encoder.patch import reduce

    if find_layout(parts.vision).prefix != 1 or not parts.drop_cls:
        raise MethodUnsupportedError(
            "tower needs a vision tower with one [CLS] token that the VLM drops (vision_feature_select_strategy "
            "'default', no register tokens)"
        )
    layers = method.reducing_layers(n, count, parts.feature_layer)
    with reduce(parts.vision, method.method, keep_tokens=count + 1, layers=layers) as patch:
        out = parts.vision(pixel_values=pixels, output_hidden_states=True, return_dict=True)
    state = patch.last
    features = out.hidden_states[parts.feature_layer + 1][:, 1:]
    if state is None or features.shape[1] != count or bool((state.valid.sum(dim=1) != count + 1).any()):
        raise MethodUnsupportedError(
            f"tower: {method.method.name} on vision layers {list(layers)} does not reduce the {n} patch tokens to "
            f"exactly {count}; give more reducing layers (--option layers=...) or a larger budget"
        )
    origin = state.origin[:, 1 : n + 1]
    slot = torch.where(origin >= 1, origin - 1, -1)
    positions = torch.arange(n, device=slot.device).expand_as(slot)
    first = torch.full((slot.shape[0], count), n, dtype=torch.long, device=slot.device)
    first = first.scatter_reduce(1, slot.clamp_min(0), torch.where(slot >= 0, positions, n), reduce="amin")
    leads = first.gather(1, slot.clamp_min(0)) == positions
    status = torch.where(slot < 0, 2, torch.where(leads, 0, 1))
    return features, status


def left_pad(rows: Sequence[Tensor], images: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack ``[L_b, E]`` rows left-padded: ``(embeds [B, L, E], attention mask [B, L], image mask [B, L])``."""
    length = max(r.shape[0] for r in rows)
    embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=rows[0].device)
    image = torch.zeros(len(rows), length, dtype=torch.bool, device=rows[0].device)
    for row, (r, flags) in enumerate(zip(rows, images, strict=True)):
        pad = length - r.shape[0]
        embeds[row, pad:] = r
        mask[row, pad:] = 1
        image[row, pad:] = flags
    return embeds, mask, image
