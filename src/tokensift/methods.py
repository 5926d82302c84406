"""The method registry: a method is a named composition of a scorer, a selector and a reducer.

The CLI, the benchmark and the Python API all look methods up here by ``(target, name)``. Adding a
method is one module with its parts plus one :func:`register` call below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from tokensift.errors import ParameterError, UnknownMethodError
from tokensift.reduce import gather_tokens
from tokensift.scores import random_scores
from tokensift.select import topk_indices

Target = Literal["kv", "text", "encoder", "vision", "training"]
TARGETS: tuple[str, ...] = get_args(Target)


@dataclass(frozen=True)
class Method:
    """A registered method: its parts, the paper it implements and the defaults the paper uses."""

    name: str
    target: Target
    paper: str
    score: Callable[..., Any]
    select: Callable[..., Any]
    reduce: Callable[..., Any]
    summary: str
    needs_attention: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    build: Callable[..., Any] | None = None
    """The adapter's object for this method (e.g. a KV press or an encoder reducer), built from options."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (parts by function name)."""
        return {
            "name": self.name,
            "target": self.target,
            "summary": self.summary,
            "paper": self.paper,
            "needs_attention": self.needs_attention,
            "score": self.score.__name__,
            "select": self.select.__name__,
            "reduce": self.reduce.__name__,
            "defaults": dict(self.defaults),
        }


_REGISTRY: dict[tuple[str, str], Method] = {}


def register(method: Method) -> Method:
    """Add ``method``; a second method with the same target and name is a programming error."""
    key = (method.target, method.name)
    if key in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered for target {method.target!r}")
    _REGISTRY[key] = method
    return method


def list_methods(target: str | None = None) -> list[Method]:
    """Registered methods, sorted by target then name, optionally of one target."""
    if target is not None and target not in TARGETS:
        raise ParameterError(f"unknown target {target!r}; targets are: {', '.join(TARGETS)}")
    return [m for key, m in sorted(_REGISTRY.items()) if target is None or m.target == target]


def get_method(name: str, target: str) -> Method:
    """The method ``name`` for ``target``; :class:`UnknownMethodError` lists the known ones."""
    try:
        return _REGISTRY[(target, name)]
    except KeyError:
        known = ", ".join(m.name for m in list_methods(target)) or "none yet"
        raise UnknownMethodError(f"unknown {target} method {name!r}; known: {known}") from None


# --- kv methods ---------------------------------------------------------------------------------------------
register(
    Method(
        name="random",
        target="kv",
        summary="keep a uniformly random subset of tokens (the baseline every method must beat)",
        paper="baseline (no paper); used as the control in e.g. Li et al., 2024, SnapKV",
        score=random_scores,
        select=topk_indices,
        reduce=gather_tokens,
        defaults={"seed": 0},
    )
)

# --- text methods -------------------------------------------------------------------------------------------

# --- encoder methods ----------------------------------------------------------------------------------------
