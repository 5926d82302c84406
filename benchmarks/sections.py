"""One marked section of a results file, rewritten in place (the KV benchmark scripts each own one)."""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path, markers: tuple[str, str], section: str) -> None:
    """Put ``section`` (which starts and ends with ``markers``) where the markers are in ``path``, or at its end."""
    text = path.read_text(encoding="utf-8")
    if markers[0] in text:
        pattern = re.escape(markers[0]) + ".*?" + re.escape(markers[1])
        text = re.sub(pattern, lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")
