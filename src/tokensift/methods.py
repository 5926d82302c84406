"""The method registry: every method of every target, listed, looked up, composed and built by name.

Method classes register themselves (:func:`tokensift.registry.register`); this module only loads each
target's ``methods`` package, whose every file is imported, and answers questions about the table. The
CLI, the benchmark, the server and the Python API read methods from here and nowhere else.

A composition names a wrapper and what it wraps: ``"adakv:kvzip"`` is ``AdaKV(press=KVzip())``;
``"pyramidkv:adakv:snapkv"`` nests further. A wrapper's name alone (``"adakv"``) uses the paper's choice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tokensift.encoder.methods
import tokensift.kv.methods
import tokensift.text.methods
import tokensift.training.methods
import tokensift.vision.methods  # noqa: F401  (the five imports fill the registry)
from tokensift.errors import ParameterError, UnknownMethodError
from tokensift.registry import BUDGET_FIELDS, TARGETS, MethodInfo, Paper, registered

__all__ = [
    "TARGETS",
    "MethodInfo",
    "Paper",
    "accepts",
    "build",
    "compositions",
    "get_method",
    "list_methods",
    "names",
    "parse",
    "resolve",
]


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ParameterError(f"unknown target {target!r}; targets are: {', '.join(TARGETS)}", option="target")


def list_methods(target: str | None = None) -> list[MethodInfo]:
    """Registered methods, sorted by target then name, optionally of one target."""
    if target is not None:
        _check_target(target)
    return [m for key, m in sorted(registered().items()) if target is None or m.target == target]


def names(target: str, *, stage: str | None = None) -> list[str]:
    """The names of ``target``'s registered methods, sorted; ``stage``: only the KV methods acting at that stage
    (``cache``, ``prefill`` or ``decode``, see :attr:`tokensift.kv.press.Press.stage`)."""
    return [m.name for m in list_methods(target) if stage is None or getattr(m.cls, "stage", "cache") == stage]


def get_method(name: str, target: str) -> MethodInfo:
    """The method ``name`` for ``target``; :class:`UnknownMethodError` lists the known ones."""
    _check_target(target)
    found = registered().get((target, name))
    if found is None:
        known = ", ".join(names(target)) or "none yet"
        raise UnknownMethodError(f"unknown {target} method {name!r}; known: {known}")
    return found


def parse(target: str, spec: str) -> list[MethodInfo]:
    """The methods of a composition, outermost first: ``"adakv:kvzip"`` -> [AdaKV, KVzip].

    Every part but the last must be a wrapper (a method with a ``press`` field); a wrapper named last wraps
    its default (``"adakv"`` -> [AdaKV, SnapKV]), so options reach the default press too.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ParameterError(f"a {target} method name is needed, got {spec!r}", option="method")
    parts = [get_method(part.strip(), target) for part in spec.split(":")]
    for outer in parts[:-1]:
        if outer.wraps is None:
            raise ParameterError(
                f"{outer.name} does not wrap another method, so {spec!r} is not a composition; "
                f"wrappers: {', '.join(m.name for m in list_methods(target) if m.wraps) or 'none'}",
                option="method",
            )
    while parts[-1].wraps is not None:
        parts.append(get_method(parts[-1].wraps, target))
    return parts


def compositions(target: str) -> list[str]:
    """Every wrapper over every method that scores (``"adakv:keydiff"`` …): what composition tests run."""
    methods = list_methods(target)
    wrappers = [m for m in methods if m.wraps]
    scorers = [m for m in methods if not m.wraps and getattr(m.cls, "stage", "cache") == "cache"]
    return [
        f"{w.name}:{s.name}"
        for w in wrappers
        for s in scorers
        if not (getattr(w.cls, "reducer", False) and getattr(s.cls, "reducer", False))  # one reducer per composition
    ]


def _fields(info: MethodInfo) -> set[str]:
    """The options a method takes by name (what a wrapper wraps is named in the spec, not an option)."""
    return {f.name for f in dataclasses.fields(info.cls) if f.init and f.name != "press"}


def accepts(target: str, spec: str, option: str) -> bool:
    """Whether some part of the composition ``spec`` takes ``option``."""
    return any(option in _fields(part) for part in parse(target, spec))


def build(target: str, spec: str, **options: Any) -> Any:
    """The method (or composition) ``spec`` of ``target`` with its defaults overridden by ``options``.

    An option goes to the outermost part that declares it (``"snapkv.window"`` names the part); budget
    options (``ratio``, ``keep``, ``keep_tokens``) go to the part that holds the budget, the innermost.
    ``None`` values are left at their defaults. Unknown options and wrong values raise
    :class:`ParameterError` naming the option.
    """
    parts = parse(target, spec)
    given: list[dict[str, Any]] = [{} for _ in parts]
    for key, value in options.items():
        if value is None:
            continue
        owner, _, field_name = key.rpartition(".")
        order = [i for i, part in enumerate(parts) if not owner or part.name == owner]
        if field_name in BUDGET_FIELDS:
            order.reverse()
        chosen = next((i for i in order if field_name in _fields(parts[i])), None)
        if chosen is None:
            takes = sorted({f for part in parts for f in _fields(part)})
            raise ParameterError(
                f"{spec} takes no option {key!r}; its options: {', '.join(takes) or 'none'}", option=field_name
            )
        given[chosen][field_name] = value
    built: Any = None
    for index in reversed(range(len(parts))):
        arguments = given[index] if built is None else {**given[index], "press": built}
        try:
            built = parts[index].cls(**arguments)
        except TypeError as exc:  # a wrong argument that the dataclass itself rejects
            raise ParameterError(f"{parts[index].name}: {exc}") from None
    return built


def resolve(target: str, method: Any, **options: Any) -> Any:
    """``method`` as a method object of ``target``: built from its name (:func:`build`), or the object itself.

    An object already carries its options, so giving ``options`` with one is an error; so is an object of
    another target.
    """
    if isinstance(method, str):
        return build(target, method, **options)
    if getattr(method, "target", None) != target or not getattr(method, "name", ""):
        raise ParameterError(f"{method!r} is not a {target} method", option="method")
    given = [k for k, v in options.items() if v is not None]
    if given:
        raise ParameterError(
            f"{method.name} is a method object: give {', '.join(given)} to its constructor instead", option=given[0]
        )
    return method
