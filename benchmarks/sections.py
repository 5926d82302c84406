"""What the KV benchmark scripts share: their rows (JSON lines) and the marked section of a results file each
one rewrites in place."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (none when it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def replace_section(path: Path, markers: tuple[str, str], section: str) -> None:
    """Put ``section`` (which starts and ends with ``markers``) where the markers are in ``path``, or at its end."""
    text = path.read_text(encoding="utf-8")
    if markers[0] in text:
        pattern = re.escape(markers[0]) + ".*?" + re.escape(markers[1])
        text = re.sub(pattern, lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")
