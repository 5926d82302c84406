"""Reduce tokens inside an unmodified Hugging Face encoder, with hooks and transformers' attention interface.

``with reduce(model, "tome", ratio=0.5) as patch: model(**batch)`` merges or prunes tokens layer by layer;
``patch.last`` then says which input token ended in which output token and how many tokens each output
token stands for. No model code is forked:

* a handler on the attention router (:class:`tokensift.hooks.Route`) hands each layer's queries/keys to
  the method and replaces the model's mask (built for the full sequence) by one for the reduced tokens:
  padding masked out, plus log token sizes for proportional attention (ToMe). SDPA then runs as usual;
* a forward hook on each layer's reduction point (see :mod:`tokensift.encoder.layout`) asks the method
  for a plan and returns the reduced token stream, which the rest of the model simply carries on with.

Rows of a padded batch are reduced independently (each keeps its own token count; padding is never
merged or kept), so every row's output equals that row run alone. [CLS] and, for text, [SEP] (the first
and last real token) are protected. Removing 0 tokens leaves outputs identical to the unpatched model.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tokensift.encoder.layout import EncoderLayout, find_layout
from tokensift.encoder.methods.base import EncoderMethod, LayerContext
from tokensift.encoder.schedule import Schedule
from tokensift.errors import InputError, ModelError, ParameterError
from tokensift.hooks import AttentionCall, Handler, Route
from tokensift.methods import resolve
from tokensift.reduce.merge import assign_slots, follow_slots, scatter_mean, scatter_sum


@dataclass
class TokenState:
    """The token stream of one forward pass, updated at every reduction. Shapes: ``B`` rows, ``N``
    current tokens, ``N0`` input tokens."""

    valid: Tensor
    """``[B, N]`` real tokens (False: padding)."""
    protected: Tensor
    sizes: Tensor
    """``[B, N]`` how many input tokens each token stands for (0 for padding)."""
    origin: Tensor
    """``[B, N0]`` the current position of each input token (-1: pruned, or padding)."""
    initial: Tensor
    """``[B]`` real input tokens per row."""
    index: Tensor
    """``[B, N0]`` each input token's index among the row's reducible (unprotected, real) input tokens, or -1."""
    reduced: bool = False
    attention_bias: Tensor | None = None
    """The bias the next layers attend with, set at each reduction (None: the model's own mask)."""
    tokens: list[Tensor] = field(default_factory=list)
    """Per layer, ``[B]`` real tokens entering its attention."""
    kept: dict[int, Tensor] = field(default_factory=dict)
    """Per reducing layer, ``[B]`` real tokens after its reduction point."""

    def bias(self, dtype: torch.dtype, proportional: bool) -> Tensor:
        """Additive attention bias ``[B, 1, 1, N]``: -inf on padding, ``log(size)`` when proportional."""
        zero = torch.zeros_like(self.sizes)
        value = self.sizes.clamp_min(1e-20).log() if proportional else zero
        return torch.where(self.valid, value, float("-inf")).to(dtype)[:, None, None, :]

    def layer_tokens(self, reduce_inside: bool) -> tuple[Tensor, Tensor]:
        """``[B, L]`` real tokens in each layer's attention and in its MLP (fewer when the layer reduces
        between the two, ``reduce_inside``)."""
        attention = torch.stack(self.tokens, dim=1)
        mlp = [self.kept.get(i, t) if reduce_inside else t for i, t in enumerate(self.tokens)]
        return attention, torch.stack(mlp, dim=1)

    def groups(self, row: int = 0) -> list[list[int]]:
        """For one row, the input token positions in each output token (in output order)."""
        origin = self.origin[row]
        width = int(self.valid[row].sum().item())
        return [torch.nonzero(origin == slot).flatten().tolist() for slot in range(width)]


def current_positions(origin: Tensor, index: Tensor, width: int) -> Tensor:
    """``[B, width]`` the reducible-input index of each current token (the lowest of a merged one; -1 for
    protected tokens and padding), from where each input token went (``origin``) and its ``index``."""
    missing = index.shape[1]
    source = torch.where((origin >= 0) & (index >= 0), index, missing)
    found = torch.full((origin.shape[0], width), missing, dtype=index.dtype, device=index.device)
    found.scatter_reduce_(1, origin.clamp_min(0), source, reduce="amin")
    return torch.where(found == missing, -1, found)


def _first_and_last(valid: Tensor) -> tuple[Tensor, Tensor]:
    n = valid.shape[1]
    first = valid.long().argmax(dim=1)
    last = n - 1 - valid.flip(1).long().argmax(dim=1)
    return first, last


@dataclass
class _Capture:
    queries: Tensor | None
    keys: Tensor | None
    scaling: float


class EncoderPatch:
    """A method and schedule attached to one encoder. Use as a context manager, or ``apply()``/``remove()``."""

    def __init__(self, model: nn.Module, method: EncoderMethod, schedule: Schedule) -> None:
        self.model = model
        self.method = method
        self.schedule = schedule
        self.layout: EncoderLayout = find_layout(model)
        schedule.check(self.layout.n_layers)
        self.steps = set(schedule.reducing_layers(self.layout.n_layers))
        self.state: TokenState | None = None
        self.last: TokenState | None = None
        """The token state of the latest forward pass (sizes, sources, tokens per layer)."""
        self._signature = inspect.signature(model.forward)
        self._mask: Tensor | None = None
        self._capture: _Capture | None = None
        self._route: Route | None = None

    # -- attaching ---------------------------------------------------------------------------------------------
    def _handler(self, layer: int) -> Handler:
        def handle(call: AttentionCall) -> None:
            call.mask = self.on_attention(layer, call.query, call.key, call.mask, call.kwargs)

        return handle

    def apply(self) -> EncoderPatch:
        """Put the patch on the attention router and hook the reduction points."""
        if getattr(self.model, "_tokensift_patch", None) is not None:
            raise ModelError("this model already has a token-reduction patch; remove it first")
        route = Route(self.model, {module: self._handler(i) for i, module in enumerate(self.layout.attention)})
        route.hook(self.model, self._start, pre=True)
        route.hook(self.model, self._finish)
        for layer in sorted(self.steps):
            route.hook(self.layout.reduce_points[layer], self._reduce_hook(layer))
        self._route = route.attach()
        self.model._tokensift_patch = self  # type: ignore[assignment]
        return self

    def remove(self) -> None:
        """Detach everything; the model is exactly as before ``apply``."""
        if self._route is not None:
            self._route.detach()
            self._route = None
        if getattr(self.model, "_tokensift_patch", None) is self:
            del self.model._tokensift_patch

    def __enter__(self) -> EncoderPatch:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- the forward pass ------------------------------------------------------------------------------------
    def _start(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        mask = bound.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise InputError(
                f"token reduction needs a 2-D attention mask [batch, tokens], got shape {tuple(mask.shape)}"
            )
        self._mask = mask
        self.state = None

    def _finish(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        self.last, self.state, self._mask, self._capture = self.state, None, None, None

    def _new_state(self, query: Tensor) -> TokenState:
        batch, n = query.shape[0], query.shape[2]
        device = query.device
        if self._mask is None:
            valid = torch.ones(batch, n, dtype=torch.bool, device=device)
        elif tuple(self._mask.shape) != (batch, n):
            raise InputError(
                f"attention mask has shape {tuple(self._mask.shape)}, but the model sees {batch} x {n} tokens"
            )
        else:
            valid = self._mask.to(device).bool()
        first, last = _first_and_last(valid)
        protected = torch.zeros_like(valid)
        rows = torch.arange(batch, device=device)
        for offset in range(self.layout.prefix):  # [CLS] and any register tokens
            protected[rows, (first + offset).clamp_max(n - 1)] = True
        if self.layout.text:
            protected[rows, last] = True
        protected &= valid
        origin = torch.where(valid, torch.arange(n, device=device).expand(batch, n), -1)
        reducible = valid & ~protected
        index = torch.where(reducible, reducible.long().cumsum(dim=1) - 1, -1)
        return TokenState(valid, protected, valid.float(), origin, valid.sum(dim=1), index)

    def on_attention(
        self, layer: int, query: Tensor, key: Tensor, mask: Tensor | None, kwargs: dict[str, Any]
    ) -> Tensor | None:
        """Called by the router's handler: record, capture what the method needs, choose the mask."""
        if layer == 0 or self.state is None:
            self.state = self._new_state(query)
        state = self.state
        state.tokens.append(state.valid.sum(dim=1))
        if layer in self.steps:
            needs = self.method.needs_qk
            scaling = kwargs.get("scaling") or float(query.shape[-1]) ** -0.5
            self._capture = _Capture(query if needs else None, key if needs else None, scaling)
        return mask if state.attention_bias is None else state.attention_bias

    def _reduce_hook(self, layer: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            states = output[0] if isinstance(output, tuple) else output
            before = args[0] if args else kwargs["hidden_states"]
            reduced = self._reduce(layer, states, before)
            if reduced is states:
                return None
            return (reduced, *output[1:]) if isinstance(output, tuple) else reduced

        return hook

    def _reduce(self, layer: int, states: Tensor, before: Tensor) -> Tensor:
        state, capture = self.state, self._capture
        if state is None or capture is None:
            raise ModelError(
                f"{type(self.model).__name__}: layer {layer}'s attention did not run through transformers' "
                "AttentionInterface, so its tokens cannot be reduced"
            )
        current = state.valid.sum(dim=1)
        floor = state.protected.sum(dim=1) + ((state.valid & ~state.protected).sum(dim=1) > 0).long()
        target = self.schedule.target(state.initial, layer, self.layout.n_layers)
        remove = (current - torch.maximum(target, floor)).clamp_min(0)
        if not bool((remove > 0).any()):
            state.kept[layer] = current
            return states
        queries, keys, scaling = capture.queries, capture.keys, capture.scaling
        if getattr(self.method, "one_step_ahead", False):  # MCTF: the attention of the layer these tokens enter
            ahead = self.layout.next_attention_inputs(layer + 1, states)
            if ahead is not None:
                queries, keys, scaling = ahead
        ctx = LayerContext(
            layer=layer,
            n_layers=self.layout.n_layers,
            states=states,
            before=before,
            valid=state.valid,
            protected=state.protected,
            sizes=state.sizes,
            remove=remove,
            queries=queries,
            keys=keys,
            scaling=scaling,
            bias=state.bias(torch.float32, self.method.proportional_attention)
            if state.attention_bias is None
            else state.attention_bias.float(),
            positions=current_positions(state.origin, state.index, states.shape[1]),
            reducible=(state.index >= 0).sum(dim=1),
        )
        plan = self.method.plan(ctx)
        if plan.spread is not None:  # propagate what goes into what stays (GTP-ViT: x_kept + alpha W x_going)
            spread = plan.spread.to(states.dtype)
            states = states + spread @ states
            state.sizes = (state.sizes + (spread @ state.sizes.to(states.dtype)[..., None])[..., 0]) * state.valid
        slot, valid = assign_slots(plan.target, state.valid)
        width = valid.shape[1]
        weights = state.sizes if plan.weights is None else plan.weights
        reduced = scatter_mean(states, slot, width, weights)
        state.sizes = scatter_sum(state.sizes, slot, width)
        state.protected = scatter_sum(state.protected.float(), slot, width) > 0
        state.origin = follow_slots(state.origin, slot)
        state.valid = valid
        state.reduced = True
        state.attention_bias = state.bias(reduced.dtype, self.method.proportional_attention)
        state.kept[layer] = valid.sum(dim=1)
        self._capture = None
        return reduced


def make_schedule(
    ratio: float | None = None,
    r: int | None = None,
    per_layer: list[float] | tuple[float, ...] | None = None,
    layers: list[int] | tuple[int, ...] | None = None,
    keep: float | None = None,
    keep_tokens: int | None = None,
) -> Schedule:
    """A :class:`Schedule` from keyword arguments (lists become tuples)."""
    return Schedule(
        ratio=ratio,
        r=r,
        per_layer=tuple(per_layer) if isinstance(per_layer, list | tuple) else per_layer,
        layers=tuple(layers) if isinstance(layers, list | tuple) else layers,
        keep=keep,
        keep_tokens=keep_tokens,
    )


def apply(
    model: nn.Module,
    method: str | EncoderMethod = "tome",
    *,
    ratio: float | None = None,
    keep: float | None = None,
    keep_tokens: int | None = None,
    r: int | None = None,
    per_layer: list[float] | tuple[float, ...] | None = None,
    layers: list[int] | tuple[int, ...] | None = None,
    schedule: Schedule | None = None,
    **options: Any,
) -> EncoderPatch:
    """Attach ``method`` permanently (until :func:`remove`); returns the patch.

    The budget is what the last reducing layer keeps of each row: ``ratio`` removed, ``keep`` kept or
    ``keep_tokens``, spread over the layers; or ToMe's ``r`` per layer, or a ``per_layer`` list, or a
    :class:`Schedule`. ``options`` are the method's own.
    """
    if schedule is None:
        schedule = make_schedule(ratio, r, per_layer, layers, keep, keep_tokens)
    elif any(v is not None for v in (ratio, keep, keep_tokens, r, per_layer, layers)):
        raise ParameterError("give either a schedule or ratio/keep/keep_tokens/r/per_layer/layers, not both")
    return EncoderPatch(model, resolve("encoder", method, **options), schedule).apply()


def remove(model: nn.Module) -> None:
    """Detach the patch attached to ``model`` (no-op when there is none)."""
    patch = getattr(model, "_tokensift_patch", None)
    if patch is not None:
        patch.remove()


@contextlib.contextmanager
def reduce(model: nn.Module, method: str | EncoderMethod = "tome", **kwargs: Any) -> Iterator[EncoderPatch]:
    """``with reduce(model, "tome", ratio=0.5) as patch:`` — :func:`apply` for the block only."""
    patch = apply(model, method, **kwargs)
    try:
        yield patch
    finally:
        patch.remove()
