"""Convert a GGUF model once into a safetensors folder and reuse it.

Loading a GGUF file dequantizes every tensor (about 13 s for SmolLM2 on 2 cores); a float32
safetensors copy loads in well under a second. The conversion is atomic: it is written to a temporary
folder next to the final one, a manifest (file names and byte sizes) is written last, and the folder
is renamed into place. A folder without a valid manifest, or whose files do not match it, is treated
as corrupted and rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

MANIFEST = "tokensift-manifest.json"
FORMAT_VERSION = 1
CACHE_ENV = "TOKENSIFT_CACHE"


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``override``, else ``$TOKENSIFT_CACHE``, else ``~/.cache/tokensift``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tokensift"


def fingerprint(parts: list[Path]) -> str:
    """Identify a source by its pieces' names and sizes (cheap, and changes with a new wheel version)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(f"{part.name}:{part.stat().st_size};".encode())
    return digest.hexdigest()[:16]


def _safetensors_header_ok(path: Path) -> bool:
    """A safetensors file starts with an 8-byte length and a JSON header that must parse."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length <= 0 or length > 100_000_000:
                return False
            json.loads(handle.read(length))
    except (OSError, struct.error, ValueError):
        return False
    return True


def is_valid(folder: Path, source: str) -> bool:
    """Whether ``folder`` is a complete conversion of ``source`` (manifest present and all files match)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("format") != FORMAT_VERSION or manifest.get("source") != source:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
        if name.endswith(".safetensors") and not _safetensors_header_ok(path):
            return False
    return True


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_converted(
    folder: Path, source: str, build: Callable[[Path], None], *, log: Callable[[str], None] | None = None
) -> Path:
    """Return ``folder`` holding a valid conversion of ``source``, building it with ``build(tmp)`` if needed.

    ``build`` writes the model files into an empty temporary folder; this function writes the manifest
    and renames the folder into place. Concurrent callers wait on a lock; leftovers of killed builds are
    removed.
    """
    say = log or (lambda message: print(message, file=sys.stderr))
    if is_valid(folder, source):
        return folder
    with _locked(folder.parent / f".{folder.name}.lock"):
        if is_valid(folder, source):  # another process finished it while we waited
            return folder
        for stale in folder.parent.glob(f".tmp-{folder.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if folder.exists():
            say(f"tokensift: cache {folder} is out of date, incomplete or corrupted; rebuilding it")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        try:
            build(tmp)
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
            manifest = {"format": FORMAT_VERSION, "source": source, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            if folder.exists():
                trash = folder.parent / f".tmp-{folder.name}-old-{os.getpid()}"
                os.rename(folder, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder
