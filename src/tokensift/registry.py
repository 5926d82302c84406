"""Where method classes register themselves: the :func:`register` decorator and the table it fills.

A method is one dataclass in one file. The class says what it is::

    @register
    @dataclass
    class SnapKV(ScorerPress):
        name: ClassVar[str] = "snapkv"
        paper: ClassVar[Paper] = Paper("Li et al., 2024", "SnapKV: ...", arxiv="2404.14469")
        summary: ClassVar[str] = "observation-window attention, pooled; window kept"
        window: int = 32            # the dataclass fields are the method's options and defaults

and its target comes from the base class it extends (``Press``: ``kv``, ``TextMethod``: ``text`` …).
This module imports no adapter, so method modules can import it without an import cycle; lookups,
compositions and building live in :mod:`tokensift.methods`, which loads every target's methods.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import re
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from tokensift.errors import ParameterError

Target = Literal["kv", "text", "encoder", "vision", "training"]
TARGETS: tuple[str, ...] = get_args(Target)
BUDGET_FIELDS = ("ratio", "keep", "keep_tokens")
"""The budget every method takes (see :class:`tokensift.select.budget.Budget`); not listed among its options."""
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Paper:
    """The paper a method implements: ``cite`` ("Authors, year"), ``title`` and its arXiv id or DOI (or, for a
    paper with neither, such as one only in conference proceedings, the proceedings' ``venue`` and ``link``)."""

    cite: str
    title: str
    arxiv: str | None = None
    doi: str | None = None
    venue: str | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        if self.arxiv is not None and not re.fullmatch(r"\d{4}\.\d{4,5}", self.arxiv):
            raise ValueError(f"arXiv id {self.arxiv!r} is not of the form 2404.14469")
        if self.arxiv is None and self.doi is None and (self.venue is None or self.link is None):
            raise ValueError(f"paper {self.title!r} needs an arXiv id, a DOI, or a venue and a link")

    @property
    def id(self) -> str:
        """``arXiv:2404.14469``, ``doi:…`` or the venue."""
        if self.arxiv:
            return f"arXiv:{self.arxiv}"
        return f"doi:{self.doi}" if self.doi else str(self.venue)

    @property
    def url(self) -> str:
        if self.arxiv:
            return f"https://arxiv.org/abs/{self.arxiv}"
        return f"https://doi.org/{self.doi}" if self.doi else str(self.link)

    def __str__(self) -> str:
        return f"{self.cite}, {self.title} ({self.id})"


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: the class, and what the registry reads from it."""

    name: str
    target: str
    cls: type
    paper: Paper | None
    summary: str

    @property
    def baseline(self) -> bool:
        """A control with no paper of its own (random selection)."""
        return self.paper is None

    @property
    def wraps(self) -> str | None:
        """For a wrapper (a method that takes the method it wraps as ``press``): the name it wraps by default."""
        inner = _field_default(self.cls, "press")
        return getattr(inner, "name", None) if inner is not None else None

    def options(self) -> dict[str, Any]:
        """The method's own options and their defaults (its dataclass fields, budget excluded)."""
        found = {}
        for f in dataclasses.fields(self.cls):
            if f.init and not f.name.startswith("_") and f.name not in BUDGET_FIELDS and f.name != "press":
                found[f.name] = _field_default(self.cls, f.name)
        return found

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (used by ``tokensift methods --json``)."""
        return {
            "name": self.name,
            "target": self.target,
            "summary": self.summary,
            "paper": None if self.paper is None else str(self.paper),
            "paper_id": None if self.paper is None else self.paper.id,
            "paper_url": None if self.paper is None else self.paper.url,
            "baseline": self.baseline,
            "wraps": self.wraps,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "options": {k: v if _jsonable(v) else repr(v) for k, v in self.options().items()},
        }


def _field_default(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return None
    return None


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


_REGISTRY: dict[tuple[str, str], MethodInfo] = {}

C = TypeVar("C", bound=type)


def register(cls: C) -> C:
    """Class decorator: register a method dataclass under its ``target`` and ``name`` (read from the class)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass (its fields are the method's options)")
    name, target = getattr(cls, "name", None), getattr(cls, "target", None)
    paper, summary = getattr(cls, "paper", None), getattr(cls, "summary", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise TypeError(f"{cls.__name__}.name must be a lower-case identifier, got {name!r}")
    if target not in TARGETS:
        raise TypeError(f"{cls.__name__}.target must be one of {TARGETS}, got {target!r}")
    if paper is not None and not isinstance(paper, Paper):
        raise TypeError(f"{cls.__name__}.paper must be a Paper (or None for a baseline)")
    if not summary:
        raise TypeError(f"{cls.__name__} needs a one-line summary")
    key = (target, name)
    if key in _REGISTRY and _REGISTRY[key].cls is not cls:
        raise TypeError(f"method {name!r} is already registered for target {target!r}")
    _REGISTRY[key] = MethodInfo(name, target, cls, paper, summary)
    return cls


def registered() -> dict[tuple[str, str], MethodInfo]:
    """The table as filled so far (``tokensift.methods`` loads every target's methods first)."""
    return dict(_REGISTRY)


def option(default: Any, *, low: float | None = None, high: float | None = None, open_low: bool = False) -> Any:
    """A method option with its default and allowed range (checked by :func:`validate`): ``low <= x <= high``,
    or ``low < x`` with ``open_low``."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high, "open_low": open_low})


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _accepts(kind: Any, value: Any) -> bool:
    """Whether ``value`` fits the annotation ``kind`` (plain types, unions, Literal; anything else passes)."""
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        return any(_accepts(arg, value) for arg in get_args(kind))
    if origin is Literal:
        return value in get_args(kind)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    return True


def _describe(kind: Any) -> str:
    origin = get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(kind))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(kind))
    return "None" if kind is type(None) else getattr(kind, "__name__", str(kind))


def validate(method: Any) -> None:
    """Check every option of a method dataclass against its annotation and :func:`option` range.

    Raises :class:`ParameterError` naming the option, so a wrong ``--option window=abc`` never reaches torch.
    """
    hints = _hints(type(method))
    for f in dataclasses.fields(method):
        if not f.init:
            continue
        value = getattr(method, f.name)
        kind = hints.get(f.name, Any)
        label = f"{getattr(method, 'name', type(method).__name__)} option {f.name}"
        if not _accepts(kind, value):
            raise ParameterError(f"{label} must be {_describe(kind)}, got {value!r}", option=f.name)
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if low is not None and (value <= low if f.metadata.get("open_low") else value < low):
            bound = f"> {low:g}" if f.metadata.get("open_low") else f">= {low:g}"
            raise ParameterError(f"{label} must be {bound}, got {value}", option=f.name)
        if high is not None and value > high:
            raise ParameterError(f"{label} must be <= {high:g}, got {value}", option=f.name)


def import_all(package: str, path: Iterable[str]) -> None:
    """Import every module of a target's ``methods`` package, so each registers its classes (one file per method)."""
    for found in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        if not found.name.startswith("_"):
            importlib.import_module(f"{package}.{found.name}")
