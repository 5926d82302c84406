"""Command-line options every command spells the same way: model, caches, data, budgets, method options.

No ``from __future__ import annotations`` here: typer reads these annotations as objects.
"""

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[str, typer.Option("--model", "-m", help="Embedded model name or local model folder.")]
CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Converted-model cache (default $TOKENSIFT_CACHE or ~/.cache/tokensift)."),
]
DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Evaluation data (default $TOKENSIFT_DATA or ../shared/data).")
]
Ratio = Annotated[float | None, typer.Option(help="Fraction of the tokens removed, in [0, 1).")]
Keep = Annotated[float | None, typer.Option(help="Fraction of the tokens kept instead, in (0, 1].")]
KeepTokens = Annotated[int | None, typer.Option(help="Tokens kept instead (an absolute budget).")]
Option = Annotated[list[str] | None, typer.Option(help="Method option key=value (repeatable).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
