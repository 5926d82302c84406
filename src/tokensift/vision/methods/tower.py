"""Reduce the visual tokens inside the VLM's vision tower, with any encoder token-reduction method.

The methods before the language model (FasterVLM, VisionZip, DivPrune …) choose among the tower's *output*
tokens, so the tower itself runs on every patch. Merging inside the tower, as DyMU's DToMe does (Wang et al.,
2025, "DyMU: Dynamic Merging and Virtual Unmerging for Efficient VLMs", arXiv:2504.17040), shortens the tower's
own later layers as well and lets each merged token carry what its group saw. Here the merging is any encoder
method of the registry (``encoder``: MCTF by default, Lee et al., 2024, arXiv:2403.10030; ToMe, PiToMe, EViT …),
attached to the unmodified tower by :mod:`tokensift.encoder.patch` for the one forward pass, with the project's
exact budget: the reducing layers keep the same share each, so the feature layer hands the projector exactly the
budget's tokens. Differences from DyMU: a fixed budget instead of per-image thresholds, and no virtual
unmerging in the language model (its merged tokens are the size-weighted means the encoder method forms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import tokensift.encoder.methods  # noqa: F401  (registers the encoder methods looked up below)
from tokensift.encoder.methods.base import EncoderMethod
from tokensift.errors import MethodUnsupportedError, ParameterError, UnknownMethodError
from tokensift.inputs import parse_list
from tokensift.registry import Paper, register, registered
from tokensift.vision.methods.base import Plan, VisionContext, VisionMethod

SHARE = 0.55
"""The smallest share of its tokens a reducing layer keeps by default (bipartite matching removes at most half)."""


@register
@dataclass(frozen=True)
class Tower(VisionMethod):
    """An encoder method (``encoder``, MCTF by default) reducing the patch tokens inside the vision tower.

    ``layers``: the tower's reducing layers (each reduces after its block), all before the feature layer; by
    default the fewest (at least three) that keep at least 55 % each, spaced up to three apart and ending two
    layers before the feature layer, so the last layers run on the budget's tokens (DINOv2-small at 25 %
    kept: layers 3, 6 and 9).
    """

    name: ClassVar[str] = "tower"
    paper: ClassVar[Paper] = Paper(
        "Wang et al., 2025", "DyMU: Dynamic Merging and Virtual Unmerging for Efficient VLMs", arxiv="2504.17040"
    )
    summary: ClassVar[str] = "an encoder method (MCTF) merges the patch tokens inside the vision tower to the budget"
    stage: ClassVar[str] = "tower"
    merges = True

    encoder: str | EncoderMethod = "mctf"
    """The encoder method (a name of the registry's encoder target, or the method object)."""
    layers: tuple[int, ...] | list[int] | int | str | None = None
    """The reducing layers (a list, or ``"3,6,9"``); None: chosen from the budget."""
    _method: EncoderMethod | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.encoder, str):
            found = registered().get(("encoder", self.encoder))
            if found is None:
                known = ", ".join(sorted(name for target, name in registered() if target == "encoder"))
                raise UnknownMethodError(f"unknown encoder method {self.encoder!r}; known: {known}")
            object.__setattr__(self, "_method", found.cls())
        elif isinstance(self.encoder, EncoderMethod):
            object.__setattr__(self, "_method", self.encoder)
        else:
            raise ParameterError(
                f"tower option encoder must be an encoder method's name or object, got {self.encoder!r}",
                option="encoder",
            )
        if self.layers is None:
            return
        given: object = self.layers
        if isinstance(given, int) and not isinstance(given, bool):
            given = [given]
        elif isinstance(given, str):
            given = parse_list(given, int, option="layers")
        if (
            not isinstance(given, list | tuple)
            or not given
            or any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in given)
        ):
            raise ParameterError(
                f"tower: layers must be non-negative layer indices such as 3,6,9, got {self.layers!r}", option="layers"
            )
        object.__setattr__(self, "layers", tuple(sorted(set(given))))

    @property
    def method(self) -> EncoderMethod:
        """The encoder method object."""
        assert self._method is not None
        return self._method

    def reducing_layers(self, n: int, keep: int, feature_layer: int) -> tuple[int, ...]:
        """The tower layers that reduce ``n`` patch tokens to ``keep`` before ``feature_layer``."""
        if isinstance(self.layers, tuple):
            if max(self.layers) >= feature_layer:
                raise ParameterError(
                    f"tower: every reducing layer must come before the feature layer {feature_layer}, got "
                    f"{list(self.layers)}",
                    option="layers",
                )
            return tuple(self.layers)
        last = feature_layer - 2 if feature_layer >= 2 else feature_layer - 1
        if last < 0:
            raise MethodUnsupportedError("tower needs at least one vision layer before the feature layer")
        share = min(1.0, (keep + 1) / (n + 1))  # the [CLS] stays
        steps = 3 if share >= 1.0 else max(3, math.ceil(math.log(share) / math.log(SHARE)))
        steps = min(steps, last + 1)
        stride = max(1, min(3, (last + 1) // steps))
        return tuple(last - stride * i for i in reversed(range(steps)))

    def plan(self, ctx: VisionContext) -> Plan:
        raise MethodUnsupportedError(
            "tower reduces inside the vision tower: run it through tokensift.vision.prepare (LLaVA), not on a "
            "tower's finished output"
        )
