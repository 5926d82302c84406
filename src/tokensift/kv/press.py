"""Presses: KV-cache compression methods, split like kvpress's into ``score`` and ``select``.

Two kinds, both registered with :func:`tokensift.registry.register`:

* a :class:`ScorerPress` says how informative each cached token is (``score``) and holds the budget
  (``ratio`` removed, ``keep`` kept or ``keep_tokens``) and the protected first/last tokens;
* a :class:`Wrapper` takes the press it wraps as an object (``AdaKV(press=KeyDiff())``) and changes how
  the budget is shared or spent (per head, per layer, in chunks), delegating everything else.

A press is also a context manager over a model, as in kvpress: ``with SnapKV(ratio=0.5)(model): ...``.
Only torch and the cores are imported here, so loading the registry stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from tokensift.errors import MethodUnsupportedError, ParameterError
from tokensift.kv.view import LayerView, Selection
from tokensift.registry import Paper, option, validate
from tokensift.select import Budget, global_indices, topk_indices

if TYPE_CHECKING:  # typing only: the session module never imports presses
    from tokensift.kv.attach import Session
    from tokensift.kv.cache import RaggedLayer


class Press:
    """Base of every KV method. Subclass :class:`ScorerPress` or :class:`Wrapper`, not this."""

    target: ClassVar[str] = "kv"
    name: ClassVar[str] = ""
    paper: ClassVar[Paper | None] = None
    summary: ClassVar[str] = ""

    query_rows: ClassVar[int | None] = 0
    """How many of the last query rows :meth:`score` reads (``None``: all of them)."""
    online: ClassVar[bool] = False
    """Whether the score can be updated one decoding step at a time (see :meth:`ScorerPress.update_online`)."""
    model_wide: ClassVar[bool] = False
    """Whether :meth:`select_layers` chooses every layer together (compression waits for the end of the forward)."""
    needs_probe: ClassVar[bool] = False
    """Whether :meth:`score` reads probe passes (``LayerView.probes``) run after the prefill."""
    scores_in_probe: ClassVar[bool] = False
    """Whether the probe passes form the scores themselves (``LayerView.probe_scores``, KVzip's reconstruction)."""
    needs_hidden: ClassVar[bool] = False
    """Whether :meth:`score` reads the layer's input hidden states (``LayerView.hidden``)."""
    reducer: ClassVar[bool] = False
    """Whether :meth:`build` stores the unselected tokens its own way (packed, merged) instead of evicting them."""
    reducer_rows: ClassVar[int | None] = 0
    """How many of the last query rows :meth:`build` reads (a merging reducer's attention weights)."""
    stage: ClassVar[str] = "cache"
    """What the method changes: ``cache`` (the prefill's cache, the default), ``prefill`` (which tokens the
    later layers see at all: :mod:`tokensift.kv.filter`) or ``decode`` (which cached tokens each decoding step
    attends: :mod:`tokensift.kv.sparse`). Only ``cache`` methods can be wrapped."""

    @property
    def scorer(self) -> ScorerPress:
        """The press that scores (itself, or the innermost press of a composition)."""
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """The name the CLI and the benchmark use: ``snapkv``, ``adakv:kvzip`` …"""
        return self.name

    @property
    def active(self) -> bool:
        """False when nothing would be removed: the cache is left as it is."""
        return self.scorer.budgeted.active

    @property
    def wide(self) -> bool:
        """Whether compression waits for the whole forward: this press (or the one a reducer wraps) selects every
        layer together."""
        return self.model_wide

    @property
    def rows_wanted(self) -> int | None:
        """Query rows the adapter must hand over: what the scorer and every reducer read (``None``: all)."""
        return _more_rows(self.scorer.query_rows, self.reducer_rows)

    @property
    def evicts(self) -> bool:
        """Whether the unselected tokens are simply dropped (False for low-precision and merging reducers)."""
        return not self.reducer

    def build(
        self, keys: Tensor, values: Tensor, selection: list[Selection], views: list[LayerView], starts: list[int]
    ) -> RaggedLayer:
        """The layer's new cache from ``keys, values [B, Hkv, T, D]`` and the kept positions ``selection[row]``
        (positions in the batch; ``views[row]`` and ``starts[row]`` say what each row holds): eviction unless
        a reducer says otherwise."""
        from tokensift.kv.cache import RaggedLayer

        return RaggedLayer.from_selection(keys, values, selection)

    def keep_for_bytes(self, fraction: float, head_dim: int, itemsize: int) -> float | None:
        """The fraction of tokens to select so the layer stores ``fraction`` of its full bytes (None: out of
        reach). Eviction stores exactly the kept tokens."""
        return fraction

    def budget(self, view: LayerView) -> int:
        """Tokens each KV head of this layer keeps (exact)."""
        raise NotImplementedError

    def protection(self, k: int, n: int) -> tuple[int, int]:
        """Protected first/last counts within a budget of ``k`` of ``n`` tokens."""
        raise NotImplementedError

    def score(self, view: LayerView) -> Tensor:
        """``[Hkv, T]`` scores, higher = keep."""
        raise NotImplementedError

    def select(self, view: LayerView, scores: Tensor, k: int) -> Selection:
        """``k`` kept positions per head (or ``heads * k`` shared by the heads) from ``scores``."""
        raise NotImplementedError

    def select_layers(self, views: dict[int, LayerView], scores: dict[int, Tensor]) -> dict[int, Selection]:
        """Kept positions of every layer of one row (layer by layer unless a press shares one budget)."""
        return {layer: self.select(views[layer], scores[layer], self.budget(views[layer])) for layer in sorted(views)}

    def compress(self, view: LayerView) -> Selection:
        """Kept positions per KV head for one row and layer."""
        return self.select(view, self.score(view), self.budget(view))

    @contextlib.contextmanager
    def __call__(self, model: Any) -> Iterator[Session]:
        """``with press(model): model.generate(...)`` — compress every prefill inside the block."""
        from tokensift.kv.attach import PrefillPolicy, attached

        with attached(model, PrefillPolicy(self)) as session:
            yield session


@dataclass
class ScorerPress(Press):
    """A press with a score: the budget and the protected first/last tokens live here."""

    ratio: float | None = None
    keep: float | None = None
    keep_tokens: int | None = None
    protect_first: int = option(0, low=0)
    protect_last: int = option(0, low=0)

    def __post_init__(self) -> None:
        validate(self)
        self.budgeted  # noqa: B018 - checks the budget fields now, not at the first prefill

    @property
    def budgeted(self) -> Budget:
        return Budget(self.ratio, self.keep, self.keep_tokens)

    @property
    def scorer(self) -> ScorerPress:
        return self

    def budget(self, view: LayerView) -> int:
        return self.budgeted.tokens(view.n)

    def protection(self, k: int, n: int) -> tuple[int, int]:
        first = min(self.protect_first, k, n)
        return first, min(self.protect_last, k - first, n - first)

    def select(self, view: LayerView, scores: Tensor, k: int) -> Selection:
        return self.choose(scores, k)

    def choose(self, scores: Tensor, k: int) -> Selection:
        """Top ``k`` of ``scores [Hkv, T]`` per head with the protected tokens (ties to the earlier position)."""
        first, last = self.protection(k, scores.shape[-1])
        return list(topk_indices(scores, k, protect_first=first, protect_last=last))

    def probe_inputs(self, ids: list[int]) -> list[list[int]]:
        """Token ids of the probe passes to run after a prefill of ``ids`` (none unless :attr:`needs_probe`)."""
        return []

    def update_online(self, scores: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        """New running scores after one decoding step (``attention``: weight each cached token received)."""
        raise MethodUnsupportedError(f"{self.name} cannot update its scores while decoding")

    state_channels: ClassVar[int] = 0
    """Values an online press remembers per cached token beside its score while decoding (0: none; then
    :meth:`prefill_state`, :meth:`fresh_state` and :meth:`update_state` replace :meth:`update_online`)."""

    def prefill_state(self, view: LayerView, positions: Tensor) -> tuple[Tensor, Tensor]:
        """``(state [Hkv, T, C], scores [Hkv, T])`` of the prompt's tokens right after prefill."""
        raise NotImplementedError

    def fresh_state(self, positions: Tensor) -> Tensor:
        """``[Hkv, n, C]`` state of tokens just appended at ``positions [Hkv, n]`` (not yet attended)."""
        raise NotImplementedError

    def update_state(self, state: Tensor, attention: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """``(state, scores)`` after one decoding step's ``attention [Hkv, T]``."""
        raise NotImplementedError


@dataclass
class GlobalBudgetPress(ScorerPress):
    """A scorer whose budget is shared by every layer and head at once (KVzip's allocation): the model's
    ``layers * heads * k`` best (layer, head, token) scores are kept, so the cache is ragged per head."""

    model_wide = True

    def select_layers(self, views: dict[int, LayerView], scores: dict[int, Tensor]) -> dict[int, Selection]:
        order = sorted(views)
        k = self.budget(views[order[0]])
        first, last = self.protection(k, views[order[0]].n)
        chosen = global_indices([scores[layer] for layer in order], k, protect_first=first, protect_last=last)
        return dict(zip(order, chosen, strict=True))


@dataclass
class Wrapper(Press):
    """A press around another press (``press``): it changes how the budget is shared or spent.

    Everything a wrapper does not override goes to the wrapped press: scores, budget, protection,
    selection and probe passes, so wrappers nest (``pyramidkv:adakv:snapkv``).
    """

    press: Press
    """The wrapped press (each wrapper declares the paper's choice as its default)."""

    def __post_init__(self) -> None:
        if not isinstance(self.press, Press):
            raise ParameterError(f"{self.name} wraps a press, got {type(self.press).__name__}", option="press")
        validate(self)
        if self.press.stage != "cache":
            raise ParameterError(
                f"{self.name} cannot wrap {self.press.spec}: it changes the {self.press.stage}, not a cache a wrapper "
                "could share out or reduce",
                option="press",
            )
        if self.reducer and not self.press.evicts:
            raise ParameterError(
                f"{self.name} stores the unselected tokens its own way and cannot wrap {self.press.spec}, which "
                "does too (one reducer per composition)",
                option="press",
            )

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.press.spec}"

    @property
    def scorer(self) -> ScorerPress:
        return self.press.scorer

    def budget(self, view: LayerView) -> int:
        return self.press.budget(view)

    def protection(self, k: int, n: int) -> tuple[int, int]:
        return self.press.protection(k, n)

    def score(self, view: LayerView) -> Tensor:
        return self.press.score(view)

    def select(self, view: LayerView, scores: Tensor, k: int) -> Selection:
        return self.press.select(view, scores, k)

    @property
    def rows_wanted(self) -> int | None:
        return _more_rows(self.press.rows_wanted, self.reducer_rows)

    @property
    def wide(self) -> bool:
        return self.model_wide or (self.reducer and self.press.wide)

    def select_layers(self, views: dict[int, LayerView], scores: dict[int, Tensor]) -> dict[int, Selection]:
        """A reducer keeps the wrapped press's selection, model-wide ones included; other wrappers select per layer."""
        if self.reducer:
            return self.press.select_layers(views, scores)
        return super().select_layers(views, scores)

    @property
    def evicts(self) -> bool:
        return not self.reducer and self.press.evicts

    def build(
        self, keys: Tensor, values: Tensor, selection: list[Selection], views: list[LayerView], starts: list[int]
    ) -> RaggedLayer:
        return self.press.build(keys, values, selection, views, starts)

    def keep_for_bytes(self, fraction: float, head_dim: int, itemsize: int) -> float | None:
        return self.press.keep_for_bytes(fraction, head_dim, itemsize)


def _more_rows(a: int | None, b: int | None) -> int | None:
    """The larger of two query-row counts (``None``: every row)."""
    return None if a is None or b is None else max(a, b)
