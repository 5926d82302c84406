"""Public faces of the target packages: attributes loaded on first use, method classes read from the registry.

``tokensift.kv``, ``tokensift.text`` and ``tokensift.encoder`` each name their public functions in a
table and export every registered method class of their target under its class name. Loading lazily
keeps ``import tokensift.kv`` cheap and lets the method registry import the packages' method modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_face(module: str, target: str, table: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """``(__getattr__, __dir__)`` for ``module``: ``table`` maps a public name to the module defining it."""

    def classes() -> dict[str, type]:
        from tokensift.methods import list_methods

        return {m.cls.__name__: m.cls for m in list_methods(target)}

    def names() -> list[str]:
        return sorted([*table, *classes()])

    def getattr_(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        if name == "__all__":
            return names()
        found = classes().get(name)
        if found is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return found

    return getattr_, names
