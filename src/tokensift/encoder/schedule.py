"""How many tokens each reduction layer keeps: a total budget (``ratio`` removed, ``keep`` kept or
``keep_tokens``, the convention of every target), ToMe's constant ``r``, or a per-layer list."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tokensift.errors import ParameterError
from tokensift.inputs import whole_number
from tokensift.select import Budget


@dataclass(frozen=True)
class Schedule:
    """Exactly one of ``ratio``, ``keep``, ``keep_tokens``, ``r`` and ``per_layer``; targets are per row, from
    its own token count.

    * ``ratio`` / ``keep`` / ``keep_tokens``: the fraction of each row's tokens removed / kept, or the tokens
      kept, by the last reduction layer, spread geometrically (every reduction layer keeps the same
      fraction), so early layers already run on fewer tokens. A row shorter than ``keep_tokens`` is kept whole.
    * ``r``: ToMe's constant number of tokens removed per reduction layer.
    * ``per_layer``: fraction of the tokens entering each layer that it removes (one value per layer).

    ``layers`` restricts the total budgets and ``r`` to these layers (default: every layer). Removing 0
    tokens leaves the model's outputs identical.
    """

    ratio: float | None = None
    r: int | None = None
    per_layer: tuple[float, ...] | None = None
    layers: tuple[int, ...] | None = None
    keep: float | None = None
    keep_tokens: int | None = None

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.keep, self.keep_tokens)

    def __post_init__(self) -> None:
        """What can be checked without the model (the layers are checked by :meth:`check`)."""
        given = [name for name in ("ratio", "keep", "keep_tokens", "r", "per_layer") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ParameterError(
                f"give exactly one of ratio, keep, keep_tokens, r and per_layer (got {', '.join(given) or 'none'})",
                option=given[1] if len(given) > 1 else "ratio",
            )
        self.budget  # noqa: B018 - validates ratio / keep / keep_tokens
        for name, kind in (("layers", int), ("per_layer", float)):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, tuple)
                or not all(isinstance(v, int | kind) and not isinstance(v, bool) for v in value)
            ):
                raise ParameterError(f"{name} must be a list of numbers, got {value!r}", option=name)
        if self.r is not None:
            whole_number(self.r, "r", low=0, label="r (tokens removed per layer)")

    def check(self, n_layers: int) -> None:
        """Raise :class:`ParameterError` for a schedule that does not fit a model with ``n_layers`` layers."""
        if self.per_layer is not None:
            if len(self.per_layer) != n_layers:
                raise ParameterError(
                    f"per-layer schedule has {len(self.per_layer)} values; the model has {n_layers} layers"
                )
            bad = [f for f in self.per_layer if not (0.0 <= f < 1.0) or math.isnan(f)]
            if bad:
                raise ParameterError(f"per-layer fractions must be in [0, 1), got {bad[0]}")
            if self.layers is not None:
                raise ParameterError("layers cannot be combined with a per-layer schedule")
        if self.layers is not None:
            wrong = [i for i in self.layers if not 0 <= i < n_layers]
            if wrong or not self.layers:
                raise ParameterError(f"reduction layers must be in 0..{n_layers - 1}, got {list(self.layers)}")

    def reducing_layers(self, n_layers: int) -> list[int]:
        """Layers at which tokens may be removed."""
        if self.per_layer is not None:
            return [i for i, f in enumerate(self.per_layer) if f > 0]
        if self.r == 0 or (self.r is None and not self.budget.active):
            return []
        return sorted(set(self.layers)) if self.layers is not None else list(range(n_layers))

    def target(self, initial: Tensor, layer: int, n_layers: int) -> Tensor:
        """Tokens each row should have after ``layer`` (before clamping to what can be removed)."""
        steps = self.reducing_layers(n_layers)
        if layer not in steps:
            raise ValueError(f"layer {layer} does not reduce")
        done = steps.index(layer) + 1
        base = initial.double()
        budget = self.budget
        if budget.keep_tokens is not None:
            fraction = (budget.keep_tokens / base.clamp_min(1)).clamp(max=1.0)
            return torch.round(base * fraction ** (done / len(steps))).long()
        if budget.kept_fraction is not None and self.r is None and self.per_layer is None:
            return torch.round(base * budget.kept_fraction ** (done / len(steps))).long()
        if self.r is not None:
            return initial - self.r * done
        assert self.per_layer is not None
        kept = math.prod(1.0 - f for f in self.per_layer[: layer + 1])
        return torch.round(base * kept).long()
