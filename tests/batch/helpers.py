"""Jobs for the runner tests (importable by Ray workers through the cluster's PYTHONPATH)."""

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tokensift.batch.jobs import Job


@dataclass
class SlowJob(Job):
    """Needs no model: each row's text length, ``delay`` seconds per row; writes ``started-<pid>-<text>`` in
    ``marks`` when it starts a batch, so a test knows which process holds which shard."""

    command: ClassVar[str] = "slow"
    columns: ClassVar[tuple[str, ...]] = ("length", "pid")
    delay: float = 0.2
    marks: str = ""

    def load(self) -> None:
        self.loaded = True

    def prepare(self, row: dict[str, Any]) -> Any:
        return self.text(row)

    def process(self, items: list[Any]) -> list[dict[str, Any]]:
        if self.marks:
            (Path(self.marks) / f"started-{os.getpid()}-{items[0]}").touch()
        time.sleep(self.delay * len(items))
        return [{"length": len(text), "pid": os.getpid()} for text in items]
