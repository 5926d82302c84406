"""The README: its Python imports only the package faces, its code compiles, its figures are current."""

import ast
import re
from pathlib import Path

from tests.core.test_fuzz import EXAMPLES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
FACES = {
    "tokensift", "tokensift.kv", "tokensift.text", "tokensift.encoder", "tokensift.vision", "tokensift.training",
    "tokensift.methods",
    "tokensift.models", "tokensift.batch", "tokensift.integrations.langchain", "tokensift.integrations.llamaindex",
}  # fmt: skip
CLIENTS = {"openai", "json", "urllib.request"}
"""What the serving example may import besides the faces: the official client and the standard library."""


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_examples_import_from_the_package_faces_only():
    blocks = _python_blocks()
    assert len(blocks) >= 4
    imported = set()
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert imported and imported <= FACES | CLIENTS, imported - FACES - CLIENTS


def test_readme_states_the_fuzz_figure():
    assert f"{sum(EXAMPLES.values()):,} generated bad or edge inputs" in README
