"""The one attention router: every adapter acts on an unmodified Hugging Face model through it.

transformers dispatches every attention call through its ``AttentionInterface`` registry. tokensift
registers one implementation, ``"tokensift"``, once. A :class:`Route` puts *handlers* on chosen attention
modules and switches the model's configs to that implementation; :meth:`Route.detach` (or leaving the
``with`` block, also when it raises) restores every config and removes every hook. A handler receives the
call (the exact query/key/value states after RoPE, q/k norms and the cache update, and the mask) and
either returns the attention output (a KV session attending over its compressed cache) or ``None`` to let
the call go on, possibly with a new ``call.mask`` (an encoder patch); what no handler answers runs the
stock SDPA kernel. Handlers of the most recently attached route run first, so a probe pass observing a
model inside a KV session sees the calls before the session answers them.

Users of the router: KV sessions (:mod:`tokensift.kv.attach`), encoder patches
(:mod:`tokensift.encoder.patch`), observers (:func:`observe_attention`) and KVzip's probe passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tokensift.errors import ModelError

IMPLEMENTATION = "tokensift"


@dataclass
class AttentionCall:
    """One attention call: ``query [B, H, q, D]``, ``key``/``value [B, Hkv, T, D]``, the mask it uses."""

    module: nn.Module
    query: Tensor
    key: Tensor
    value: Tensor
    mask: Tensor | None
    kwargs: dict[str, Any]

    @property
    def scaling(self) -> float:
        return float(self.kwargs.get("scaling") or self.query.shape[-1] ** -0.5)


Handler = Callable[[AttentionCall], "tuple[Tensor, Tensor | None] | None"]
"""A handler returns the attention output (transformers' ``(output, weights)``) or ``None`` to pass the call on."""

_HANDLERS: dict[int, list[Handler]] = {}


def _dispatch(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, **kwargs: Any
) -> tuple[Tensor, Tensor | None]:
    handlers = _HANDLERS.get(id(module))
    if handlers:
        call = AttentionCall(module, query, key, value, attention_mask, kwargs)
        for handler in reversed(handlers):
            answered = handler(call)
            if answered is not None:
                return answered
        attention_mask = call.mask
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(IMPLEMENTATION, _dispatch)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """A causal LM's self-attention modules in layer order (modules that carry a ``layer_idx``)."""
    found = [
        m
        for m in model.modules()
        if isinstance(getattr(m, "layer_idx", None), int)
        and hasattr(m, "config")
        and any(hasattr(m, p) for p in ("q_proj", "qkv_proj", "query"))
    ]
    if not found:
        raise ModelError(
            f"{type(model).__name__} has no attention modules tokensift can observe; supported are Hugging Face "
            "models whose attention layers dispatch through AttentionInterface (Llama, Mistral, Qwen2/3, Gemma-3, ...)"
        )
    return sorted(found, key=layer_index)


def layer_index(module: nn.Module) -> int:
    """The decoder layer an attention module belongs to."""
    return int(getattr(module, "layer_idx"))  # noqa: B009 - attribute checked by attention_modules


class Route:
    """Handlers on attention modules of one model, plus the module hooks that go with them.

    ``attach()`` registers the handlers and switches every config of the model to the router's
    implementation; ``detach()`` undoes all of it (hooks added with :meth:`hook` included). As a context
    manager it detaches also when the block raises.
    """

    def __init__(self, model: nn.Module, handlers: Mapping[nn.Module, Handler]) -> None:
        self.model = model
        self.handlers = dict(handlers)
        self._saved: list[tuple[Any, Any]] = []
        self._handles: list[Any] = []
        self.attached = False

    def hook(self, module: nn.Module, fn: Callable[..., Any], *, pre: bool = False) -> None:
        """Register a forward (``pre``: forward-pre) hook with kwargs on ``module``, removed on detach."""
        register = module.register_forward_pre_hook if pre else module.register_forward_hook
        self._handles.append(register(fn, with_kwargs=True))

    def attach(self) -> Route:
        if self.attached:
            raise ModelError("this route is attached already")
        for module, handler in self.handlers.items():
            _HANDLERS.setdefault(id(module), []).append(handler)
        found: list[Any] = [getattr(m, "config", None) for m in self.model.modules()]
        configs = {id(c): c for c in found if c is not None and hasattr(c, "_attn_implementation")}
        for config in configs.values():
            self._saved.append((config, config._attn_implementation))
            config._attn_implementation = IMPLEMENTATION
        self.attached = True
        return self

    def detach(self) -> None:
        for config, implementation in reversed(self._saved):
            config._attn_implementation = implementation
        self._saved.clear()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, handler in self.handlers.items():
            registered = _HANDLERS.get(id(module), [])
            if handler in registered:
                registered.remove(handler)
            if not registered:
                _HANDLERS.pop(id(module), None)
        self.attached = False

    def __enter__(self) -> Route:
        return self.attach() if not self.attached else self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def layer_modules(model: nn.Module, layers: Iterable[int] | None = None) -> dict[int, nn.Module]:
    """``{layer index: attention module}`` for ``layers`` (all when ``None``); unknown layers raise."""
    modules = {layer_index(m): m for m in attention_modules(model)}
    if layers is None:
        return modules
    wanted = list(layers)
    unknown = sorted(set(wanted) - set(modules))
    if unknown:
        raise ModelError(f"layers {unknown} do not exist; the model has layers 0..{len(modules) - 1}")
    return {layer: modules[layer] for layer in wanted}


Observer = Callable[[nn.Module, Tensor, Tensor, Tensor, "Tensor | None", dict], None]
"""``observer(module, query, key, value, mask, kwargs)``; shapes ``[B, H, q, D]``, ``[B, Hkv, T, D]``."""


@contextlib.contextmanager
def observe_attention(model: nn.Module, observers: dict[int, Observer]) -> Iterator[None]:
    """Call ``observers[layer_idx]`` on every attention call of those layers inside the block.

    Attention itself is left to whatever else handles it (SDPA by default), so outputs do not change.
    """
    modules = layer_modules(model, list(observers))

    def handler_for(observer: Observer) -> Handler:
        def handle(call: AttentionCall) -> None:
            observer(call.module, call.query, call.key, call.value, call.mask, call.kwargs)

        return handle

    with Route(model, {modules[layer]: handler_for(fn) for layer, fn in observers.items()}):
        yield
