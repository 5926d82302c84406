"""The context store: byte-exact round trips, LRU under the memory cap, restarts, damaged files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from tests.conftest import tiny_gemma3, tiny_llama
from tokensift.errors import ContextDamagedError, ContextNotFoundError
from tokensift.kv.api import press_from
from tokensift.kv.cache import cache_bytes
from tokensift.kv.qa import compress_context, continue_from
from tokensift.serve.store import ContextInfo, ContextStore, new_id


def _store(folder: Path, model, memory: int = 2**30) -> ContextStore:
    return ContextStore(folder, "tiny", memory, lambda: DynamicCache(config=model.config))


def _add(store: ContextStore, model, seed: int, method: str = "adakv:snapkv"):
    torch.manual_seed(seed)
    ids = torch.randint(2, 60, (1, 30 + seed))
    context = compress_context(model, ids, press_from(method, ratio=0.5))
    info = ContextInfo(new_id(), "tiny", "text", "x", ids.shape[1], method, {}, 0, cache_bytes(context.cache), 0.0)
    store.add(info, context.cache, context.last_logits)
    return info, context


def _after(model, stored_or_context, length: int) -> torch.Tensor:
    from tokensift.kv.qa import CompressedContext

    cache = stored_or_context.cache
    context = CompressedContext(cache, length, None, 0.0, stored_or_context.last_logits)  # type: ignore[arg-type]
    return continue_from(model, context, torch.tensor([[3, 4, 5]]))


def test_round_trip_through_disk_gives_the_same_logits(tmp_path: Path) -> None:
    model = tiny_llama()
    store = _store(tmp_path, model)
    info, context = _add(store, model, 1)
    reopened = _store(tmp_path, model)  # a restart: only the disk is left
    back = reopened.get(info.id)
    assert reopened.loads == 1
    assert [layer.lengths().tolist() for layer in back.cache.layers] == [
        layer.lengths().tolist() for layer in context.cache.layers
    ]
    assert back.nbytes == cache_bytes(context.cache)
    torch.testing.assert_close(back.last_logits, context.last_logits)
    torch.testing.assert_close(_after(model, back, info.tokens), _after(model, context, info.tokens))


def test_sliding_window_layers_round_trip(tmp_path: Path) -> None:
    model = tiny_gemma3(window=8)
    config = model.config
    store = ContextStore(tmp_path, "tiny", 2**30, lambda: DynamicCache(config=config))
    info, context = _add(store, model, 2, method="snapkv")
    back = _store(tmp_path, model).get(info.id)
    assert back.cache.layers[0].is_sliding and back.cache.layers[0].cumulative_length == info.tokens
    torch.testing.assert_close(_after(model, back, info.tokens), _after(model, context, info.tokens))


def test_memory_holds_the_most_recent_contexts_under_the_cap(tmp_path: Path) -> None:
    model = tiny_llama()
    store = _store(tmp_path, model)
    first, _ = _add(store, model, 1)
    store.memory_bytes = store.held_bytes + 10  # room for one context, not two
    second, _ = _add(store, model, 2)
    assert list(store.memory) == [second.id]
    assert store.held_bytes <= store.memory_bytes
    assert store.get(first.id).info.id == first.id  # read back from disk, the other leaves memory
    assert list(store.memory) == [first.id] and store.loads == 1
    assert {c.id for c in store.list()} == {first.id, second.id}


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove"])
def test_a_damaged_file_is_reported_and_never_served(tmp_path: Path, damage: str) -> None:
    model = tiny_llama()
    info, _ = _add(_store(tmp_path, model), model, 1)
    path = tmp_path / f"{info.id}.safetensors"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    else:
        path.unlink()
    store = _store(tmp_path, model)
    with pytest.raises(ContextDamagedError, match=info.id):
        store.get(info.id)
    assert info.id not in store.memory
    store.delete(info.id)
    with pytest.raises(ContextNotFoundError):
        store.get(info.id)


def test_delete_removes_file_and_row(tmp_path: Path) -> None:
    model = tiny_llama()
    store = _store(tmp_path, model)
    info, _ = _add(store, model, 1)
    store.delete(info.id)
    assert not (tmp_path / f"{info.id}.safetensors").exists()
    assert store.list() == [] and store.stored_bytes() == 0
    with pytest.raises(ContextNotFoundError):
        store.delete(info.id)
    other = ContextStore(tmp_path, "another-model", 2**30, lambda: DynamicCache(config=model.config))
    info2, _ = _add(store, model, 3)
    with pytest.raises(ContextNotFoundError):
        other.info(info2.id)  # a context belongs to the model that made it
