"""The compressed context store: contexts in memory under a byte cap, every one also on disk.

A context (a document or a chat prefix, prefilled and compressed once) is written when it is created:
one safetensors file per context (per layer and KV head its kept keys and values) and a row in an
SQLite index (what it was made from, token and byte counts, the file's size and SHA-256). Memory holds
the most recently used contexts up to ``memory_bytes``; the least recently used leave memory (they stay
on disk) and are read back on demand. The index and files survive a restart or a killed server; a file
whose size or checksum no longer matches its index row is reported as damaged and never served. Several
servers (Ray Serve replicas, ``tokensift batch kv-compress`` workers) may share one folder: the index is the
truth, so a context another server deleted is dropped from memory on its next use.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from tokensift.errors import ContextDamagedError, ContextNotFoundError
from tokensift.kv.batch import row_segments
from tokensift.kv.cache import RaggedLayer, cache_bytes

FORMAT = "tokensift-context-1"


@dataclass
class ContextInfo:
    """What the index knows of a context (everything but its tensors)."""

    id: str
    model: str
    kind: str
    """``text`` (a document) or ``messages`` (a chat prefix)."""
    head_text: str
    """The rendered prompt text the context's tokens were made from (later requests continue it)."""
    tokens: int
    method: str | None
    options: dict[str, Any]
    bytes_full: int
    bytes_stored: int
    created: float
    file_bytes: int = 0
    sha256: str = ""

    def public(self) -> dict[str, Any]:
        """The API's view of the context."""
        return {
            "id": self.id,
            "object": "tokensift.context",
            "model": self.model,
            "kind": self.kind,
            "tokens": self.tokens,
            "method": self.method,
            "options": self.options,
            "bytes_full": self.bytes_full,
            "bytes_stored": self.bytes_stored,
            "created": int(self.created),
        }


@dataclass
class StoredContext:
    """A context's info and its one-row cache (read-only: requests copy it), with the first logits after it."""

    info: ContextInfo
    cache: Any
    last_logits: Tensor
    nbytes: int = field(default=0)


def new_id() -> str:
    return "ctx-" + uuid.uuid4().hex[:24]


def _layer_kinds(cache: Any) -> list[str]:
    return ["sliding" if getattr(layer, "is_sliding", False) else "full" for layer in cache.layers]


def serialize(cache: Any, length: int, last_logits: Tensor) -> bytes:
    """A one-row cache as safetensors bytes: ``L{layer}.H{head}.k/.v`` per KV head, plus the last logits."""
    tensors: dict[str, Tensor] = {"last_logits": last_logits.detach().reshape(-1).contiguous()}
    for i, layer in enumerate(cache.layers):
        keys, values = row_segments(layer, length)
        for h, (k, v) in enumerate(zip(keys, values, strict=True)):
            tensors[f"L{i}.H{h}.k"] = k.contiguous()
            tensors[f"L{i}.H{h}.v"] = v.contiguous()
    metadata = {"format": FORMAT, "layers": str(len(cache.layers)), "kinds": json.dumps(_layer_kinds(cache))}
    return save_tensors(tensors, metadata=metadata)


def deserialize(data: bytes, template: Any, length: int) -> tuple[Any, Tensor]:
    """The cache (ragged layers; sliding layers as the template's kind) and last logits from :func:`serialize`.

    ``template`` is an empty transformers cache for the model (its layer classes for sliding layers);
    ``length`` the positions the context consumed.
    """
    tensors = load_tensors(data)
    n_layers = len(template.layers)
    layers = []
    for i in range(n_layers):
        heads = sum(1 for name in tensors if name.startswith(f"L{i}.H") and name.endswith(".k"))
        if heads == 0:
            raise ContextDamagedError(f"layer {i} is missing from the stored context")
        keys = [tensors[f"L{i}.H{h}.k"] for h in range(heads)]
        values = [tensors[f"L{i}.H{h}.v"] for h in range(heads)]
        original = template.layers[i]
        if getattr(original, "is_sliding", False):
            layer = copy.copy(original)
            k, v = torch.stack(keys)[None], torch.stack(values)[None]
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = length
            layers.append(layer)
        else:
            layers.append(RaggedLayer([keys], [values]))
    template.layers = layers
    return template, tensors["last_logits"][None]


class ContextStore:
    """Contexts of one model: write-through to ``folder``, the most recently used held in memory."""

    def __init__(self, folder: Path, model: str, memory_bytes: int, template: Any) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.memory_bytes = memory_bytes
        self.template = template
        """A function returning an empty cache for the model (the layer kinds to rebuild)."""
        self.memory: OrderedDict[str, StoredContext] = OrderedDict()
        self.lock = threading.RLock()
        self.db = sqlite3.connect(
            self.folder / "index.sqlite", check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS contexts (id TEXT PRIMARY KEY, model TEXT, info TEXT, "
            "file TEXT, file_bytes INTEGER, sha256 TEXT, created REAL)"
        )
        self.loads = 0
        """Contexts read back from disk (metrics)."""

    # --- bookkeeping -----------------------------------------------------------------------------------------
    @property
    def held_bytes(self) -> int:
        with self.lock:
            return sum(c.nbytes for c in self.memory.values())

    def _evict(self) -> None:
        while self.memory and self.held_bytes > self.memory_bytes:
            self.memory.popitem(last=False)

    def _path(self, context_id: str) -> Path:
        return self.folder / f"{context_id}.safetensors"

    # --- the API ---------------------------------------------------------------------------------------------
    def add(self, info: ContextInfo, cache: Any, last_logits: Tensor) -> StoredContext:
        """Write the context to disk (file first, then its index row), then hold it in memory."""
        data = serialize(cache, info.tokens, last_logits)
        info.file_bytes, info.sha256 = len(data), hashlib.sha256(data).hexdigest()
        path = self._path(info.id)
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        stored = StoredContext(info, cache, last_logits, cache_bytes(cache))
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO contexts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (info.id, info.model, json.dumps(info.__dict__), path.name, info.file_bytes, info.sha256, info.created),
            )
            self.memory[info.id] = stored
            self._evict()
        return stored

    def _held(self, context_id: str) -> StoredContext | None:
        """The context from memory if its index row still exists (servers sharing the folder may delete it)."""
        with self.lock:
            if context_id not in self.memory:
                return None
            if self.db.execute("SELECT 1 FROM contexts WHERE id = ?", (context_id,)).fetchone() is None:
                del self.memory[context_id]
                return None
            self.memory.move_to_end(context_id)
            return self.memory[context_id]

    def info(self, context_id: str) -> ContextInfo:
        held = self._held(context_id)
        if held is not None:
            return held.info
        with self.lock:
            row = self.db.execute(
                "SELECT info FROM contexts WHERE id = ? AND model = ?", (context_id, self.model)
            ).fetchone()
        if row is None:
            raise ContextNotFoundError(f"no context {context_id!r} for model {self.model!r}")
        return ContextInfo(**json.loads(row[0]))

    def list(self) -> list[ContextInfo]:
        with self.lock:
            rows = self.db.execute(
                "SELECT info FROM contexts WHERE model = ? ORDER BY created", (self.model,)
            ).fetchall()
        return [ContextInfo(**json.loads(row[0])) for row in rows]

    def get(self, context_id: str) -> StoredContext:
        """The context, from memory or read back from disk (checked against its index row first)."""
        held = self._held(context_id)
        if held is not None:
            return held
        info = self.info(context_id)
        path = self._path(context_id)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ContextDamagedError(f"context {context_id!r}: its file cannot be read ({exc.strerror})") from None
        if len(data) != info.file_bytes or hashlib.sha256(data).hexdigest() != info.sha256:
            raise ContextDamagedError(
                f"context {context_id!r} is damaged on disk ({len(data)} bytes, expected {info.file_bytes}, or its "
                "checksum differs); it will not be served: delete it and create it again"
            )
        try:
            cache, last_logits = deserialize(data, self.template(), info.tokens)
        except (SafetensorError, KeyError, ValueError, RuntimeError) as exc:
            raise ContextDamagedError(f"context {context_id!r} cannot be read back: {exc}") from None
        stored = StoredContext(info, cache, last_logits, cache_bytes(cache))
        with self.lock:
            self.memory[context_id] = stored
            self.memory.move_to_end(context_id)
            self.loads += 1
            self._evict()
        return stored

    def delete(self, context_id: str) -> None:
        self.info(context_id)
        with self.lock:
            self.memory.pop(context_id, None)
            self.db.execute("DELETE FROM contexts WHERE id = ?", (context_id,))
        self._path(context_id).unlink(missing_ok=True)

    def stored_bytes(self) -> int:
        with self.lock:
            row = self.db.execute("SELECT COALESCE(SUM(file_bytes), 0) FROM contexts WHERE model = ?", (self.model,))
            return int(row.fetchone()[0])

    def close(self) -> None:
        with self.lock:
            self.db.close()
