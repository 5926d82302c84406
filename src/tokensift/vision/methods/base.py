"""What a visual-token method sees for a batch of images, and what it answers.

A method is a small frozen dataclass with ``plan(ctx) -> Plan``: from the image's patch tokens and the signals
it asks for (the vision tower's [CLS] attention and keys at chosen layers, the question's embeddings) it returns
a target map over the patch tokens (see :mod:`tokensift.reduce.merge`): each token stays, is merged into a token
that stays, or is dropped (-1), so that row ``b`` keeps ``ctx.keep[b]`` tokens. Methods acting inside the
language model (FastV) say so with ``stage = "llm"`` and score from the LLM's attention instead.
Imports only torch and the cores, so the registry stays cheap to load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from tokensift.encoder.methods.base import Plan
from tokensift.errors import ModelError
from tokensift.registry import Paper, validate

__all__ = ["Plan", "VisionContext", "VisionMethod"]


@dataclass
class VisionContext:
    """The visual tokens of a batch before the language model. Shapes: ``B`` images, ``N`` patch tokens."""

    features: Tensor
    """``[B, N, Dv]`` the vision tower's patch features that feed the projector."""
    projected: Tensor
    """``[B, N, E]`` the same tokens after the projector (the language model's input space)."""
    keep: Tensor
    """``[B]`` tokens each row keeps."""
    grid: tuple[int, int]
    """Patch rows and columns (``N = rows * cols``)."""
    cls_attention: dict[int, Tensor] = field(default_factory=dict)
    """Per vision layer asked for, ``[B, N]`` attention [CLS] pays to each patch (mean over heads)."""
    keys: dict[int, Tensor] = field(default_factory=dict)
    """Per vision layer asked for, ``[B, N, Dh]`` the patches' keys averaged over heads."""
    received: dict[int, Tensor] = field(default_factory=dict)
    """Per vision layer asked for, ``[B, N]`` mean attention each patch receives from every token."""
    text: Tensor | None = None
    """``[B, T, E]`` the question's token embeddings (input space of the language model)."""
    text_mask: Tensor | None = None
    """``[B, T]`` True for real question tokens."""
    n_layers: int = 0
    """Layers of the vision tower."""
    feature_layer: int = -1
    """The vision layer whose output feeds the projector (index into the tower's layers)."""

    @property
    def valid(self) -> Tensor:
        return self.features.new_ones(self.features.shape[:2], dtype=bool)  # type: ignore[call-overload]

    @property
    def protected(self) -> Tensor:
        return self.features.new_zeros(self.features.shape[:2], dtype=bool)  # type: ignore[call-overload]

    def cls(self, layer: int | None = None) -> Tensor:
        """``[B, N]`` [CLS] attention at ``layer`` (default: the feature layer)."""
        layer = self.feature_layer if layer is None else layer
        if layer not in self.cls_attention:
            raise ModelError(f"the vision tower's [CLS] attention at layer {layer} was not captured")
        return self.cls_attention[layer]

    def key_metric(self, layer: int | None = None) -> Tensor:
        """``[B, N, Dh]`` patch keys averaged over heads at ``layer`` (default: the feature layer)."""
        layer = self.feature_layer if layer is None else layer
        if layer not in self.keys:
            raise ModelError(f"the vision tower's keys at layer {layer} were not captured")
        return self.keys[layer]


class VisionMethod:
    """Base of every visual-token method: subclasses are registered frozen dataclasses with a ``plan``."""

    target: ClassVar[str] = "vision"
    name: ClassVar[str] = ""
    paper: ClassVar[Paper | None] = None
    summary: ClassVar[str] = ""
    stage: ClassVar[str] = "before"
    """``before``: the visual tokens are chosen before the language model; ``llm``: inside it (FastV); ``tower``:
    inside the vision tower (:mod:`tokensift.vision.methods.tower`)."""
    merges: ClassVar[bool] = False
    """Whether removed tokens are merged into kept ones rather than dropped."""
    text_aware: ClassVar[bool] = False
    """Whether the question takes part in the choice."""
    needs_tower: ClassVar[bool] = False
    """Whether ``plan`` reads the vision tower's [CLS] attention or keys (not only the projected tokens)."""

    def __post_init__(self) -> None:
        validate(self)

    def signal_layers(self, n_layers: int, feature_layer: int) -> list[int]:
        """Vision layers whose [CLS] attention and keys ``plan`` reads (default: the feature layer)."""
        return [feature_layer]

    def plan(self, ctx: VisionContext) -> Plan:
        raise NotImplementedError
