"""Where to attach to a Hugging Face encoder: its layers, attention modules and reduction points.

* BERT family (post-LayerNorm: BERT, RoBERTa, XLM-R, ELECTRA, all-MiniLM …): tokens are reduced inside
  each layer, after the attention sub-block and before the MLP, as in ToMe and EViT.
* ViT, DINOv2 (with or without registers) and CLIP vision towers (pre-LayerNorm): the residual stream after
  attention is not a module output, so tokens are reduced between layers, using the signals of the layer just
  run. [CLS] and the register tokens (Darcet et al., 2024, "Vision Transformers Need Registers",
  arXiv:2309.16588) are protected: they are never merged into patches nor dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from tokensift.errors import ModelError

SUPPORTED = (
    "BERT-family encoders (BertModel, RoBERTa, XLM-R, ELECTRA, all-MiniLM), ViTModel, Dinov2Model (also with "
    "registers) and CLIPVisionModel, "
    "whose attention dispatches through transformers' AttentionInterface"
)


@dataclass(frozen=True)
class EncoderLayout:
    """The parts of one encoder the patch attaches to, layer by layer."""

    kind: str
    attention: list[nn.Module]
    """Modules that call the attention interface (their ``id`` identifies the layer)."""
    reduce_points: list[nn.Module]
    """Modules whose output (the token stream) is reduced."""
    reduce_inside: bool
    """True when the reduction sits between attention and MLP, so the layer's MLP already runs on fewer tokens."""
    text: bool
    hidden: int
    intermediate: int
    prefix: int = 1
    """Leading tokens that are never reduced: [CLS], plus the register tokens of a ViT that has them."""
    pre_attention: list[nn.Module] | None = None
    """Per layer, the norm its attention reads through (ViT family, reduced between layers), so a reduction can
    look one layer ahead (:meth:`next_attention_inputs`); None for the BERT family (reduced inside a layer)."""

    @property
    def n_layers(self) -> int:
        return len(self.attention)

    def next_attention_inputs(self, layer: int, states: Tensor) -> tuple[Tensor, Tensor, float] | None:
        """The queries and keys ``[B, H, N, Dh]`` (and scaling) layer ``layer`` would attend with, were ``states``
        its input; None where that cannot be known before the layer runs (no such layer, BERT family)."""
        if self.pre_attention is None or not 0 <= layer < self.n_layers:
            return None
        attention: Any = self.attention[layer]
        normed = self.pre_attention[layer](states)
        shape = (*normed.shape[:-1], -1, attention.head_dim)
        queries = attention.q_proj(normed).view(shape).transpose(1, 2)
        keys = attention.k_proj(normed).view(shape).transpose(1, 2)
        scaling = getattr(attention, "scaling", getattr(attention, "scale", attention.head_dim**-0.5))
        return queries, keys, float(scaling)


def _children(layers: nn.ModuleList, path: str) -> list[nn.Module]:
    """The submodule at dotted ``path`` of every layer."""
    found = []
    for layer in layers:
        module: Any = layer
        for name in path.split("."):
            module = getattr(module, name)
        found.append(module)
    return found


def _layer_lists(model: nn.Module) -> list[nn.ModuleList]:
    return [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers")
    ]


def _config(model: nn.Module) -> object:
    config = getattr(model, "config", None)
    if config is None:
        raise ModelError(f"{type(model).__name__} is not a Hugging Face model; supported are {SUPPORTED}")
    return config


def _vit_family(
    kind: str, layers: nn.ModuleList, attention: str, norm: str, hidden: int, intermediate: int, prefix: int = 1
) -> EncoderLayout:
    """Pre-LayerNorm ViTs: reduced between layers; each layer's attention reads its input through ``norm``."""
    return EncoderLayout(
        kind,
        _children(layers, attention),
        list(layers),
        False,
        False,
        hidden,
        intermediate,
        prefix=prefix,
        pre_attention=_children(layers, norm),
    )


def find_layout(model: nn.Module) -> EncoderLayout:
    """Recognise ``model``'s architecture; :class:`ModelError` lists the supported ones otherwise."""
    config = _config(model)
    if getattr(config, "is_decoder", False):
        raise ModelError(
            f"{type(model).__name__} is configured as a decoder; token reduction needs a bidirectional encoder"
        )
    hidden = int(getattr(config, "hidden_size", 0))
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    for layers in _layer_lists(model):
        first = layers[0] if len(layers) else None
        if first is None:
            continue
        attention = getattr(first, "attention", None)
        if (
            attention is not None
            and hasattr(getattr(attention, "self", None), "query")
            and hasattr(first, "intermediate")
        ):
            return EncoderLayout(
                "bert",
                _children(layers, "attention.self"),
                _children(layers, "attention"),
                True,
                True,
                hidden,
                intermediate,
            )
        if attention is not None and hasattr(attention, "q_proj") and hasattr(first, "layernorm_before"):
            return _vit_family("vit", layers, "attention", "layernorm_before", hidden, intermediate)
        if attention is not None and hasattr(attention, "q_proj") and hasattr(first, "norm1"):
            registers = int(getattr(config, "num_register_tokens", 0) or 0)
            return _vit_family("dinov2", layers, "attention", "norm1", hidden, intermediate, prefix=1 + registers)
        if hasattr(first, "self_attn") and hasattr(first, "layer_norm1"):
            if not str(getattr(config, "model_type", "")).endswith("vision_model"):
                break  # CLIP's text tower is causal: merging would let tokens see the future
            return _vit_family("clip", layers, "self_attn", "layer_norm1", hidden, intermediate)
    raise ModelError(f"cannot reduce tokens in {type(model).__name__}; supported are {SUPPORTED}")
