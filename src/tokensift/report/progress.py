"""The one progress bar every long-running command shows (on stderr, so stdout stays clean for --json)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_STDERR = Console(stderr=True)


def progress_bar(*, transient: bool = True) -> Progress:
    """A rich progress bar on stderr: description, bar, done/total, elapsed and remaining time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_STDERR,
        transient=transient,
    )
