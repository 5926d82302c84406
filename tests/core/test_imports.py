"""No import cycle in ``src/tokensift``, imports inside functions included.

Two graphs are walked. *Everything*: every import statement anywhere in a module (functions too, but not
``if TYPE_CHECKING:`` blocks, which never run), the modules a lazy public face names in strings, and the
modules a ``methods`` package imports with ``import_all``. *Start-up*: the module-level imports only, plus
the package ``__init__`` files Python runs first when it imports a submodule. Neither may have a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "tokensift").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(every import of ``module``, its module-level imports) as module names inside the package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    everything: set[str] = set()
    top: set[str] = set()

    def target(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, at_top: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, at_top)
            return
        found: list[str] = []
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            found = [node.value] if node.value in modules else []  # a lazy face's table of modules
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "import_all":
            found = [m for m in modules if m.rpartition(".")[0] == module]
        for name in found:
            resolved = target(name)
            if resolved and resolved.startswith("tokensift") and resolved != module:
                everything.add(resolved)
                if at_top and not isinstance(node, ast.Constant):
                    top.add(resolved)
        inner = at_top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return everything, top


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    everything, startup = {}, {}
    for module, path in modules.items():
        every, top = _imports(module, path, modules)
        everything[module] = every
        mine = {module, *_parents(module)}  # packages already being imported when this module runs
        startup[module] = {*top, *(p for t in top for p in _parents(t))} - mine
    return everything, startup


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def test_no_import_cycle_including_imports_inside_functions():
    everything, _ = graphs()
    assert len(everything) > 80
    assert _cycles(everything) == []


def test_no_import_cycle_at_start_up_package_inits_included():
    _, startup = graphs()
    assert _cycles(startup) == []


def test_the_walk_finds_a_cycle_where_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    everything, _ = graphs()
    assert "tokensift.kv.api" in everything["tokensift.kv"]  # the lazy face is an edge
    assert "tokensift.kv.methods.snapkv" in everything["tokensift.kv.methods"]  # so is import_all
    assert "tokensift.kv.attach" in everything["tokensift.kv.press"]  # an import inside a function counts
