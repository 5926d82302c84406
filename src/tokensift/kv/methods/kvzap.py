"""KVzap: KVzip's scores predicted from the hidden states, at the cost of one small linear map per layer.

Jeblick & Jegou, 2026, "KVzap: Fast, Adaptive, and Faithful KV Cache Pruning" (arXiv:2601.07891). KVzip
(:mod:`tokensift.kv.methods.kvzip`) needs a second pass that repeats the whole context; KVzap learns, once
and offline, to predict each KV pair's (log) KVzip score from the hidden state that produced it (the attention
layer's input), so compression needs nothing but the prefill. The surrogate here is the paper's linear variant,
fitted by ridge regression (:mod:`tokensift.kv.kvzap_train`, which writes the shipped file) on our ``kvzip``
scores of the essays in the data folder; the paper fits a linear map or a small MLP to KVzip+ scores (attention
weighted by the value's contribution) and prunes by a threshold. Here the scores meet the project's budget
convention instead: one budget for all layers and heads (as ``kvzip``), the first ``protect_first`` kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from tokensift.errors import MethodUnsupportedError, ParameterError
from tokensift.kv.press import GlobalBudgetPress
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, option, register

BUNDLED = Path(__file__).resolve().parents[1] / "weights" / "kvzap-smollm2-135m.safetensors"
"""The surrogate trained here for the embedded SmolLM2-135M (``python -m tokensift.kv.kvzap_train``)."""


@dataclass(frozen=True)
class Surrogate:
    """Per layer a linear map from the layer's input hidden state ``[d]`` to its KV heads' log scores ``[Hkv]``."""

    weights: tuple[Tensor, ...]
    """``[Hkv, d]`` per layer."""
    biases: tuple[Tensor, ...]
    """``[Hkv]`` per layer."""
    meta: dict[str, Any]

    @property
    def layers(self) -> int:
        return len(self.weights)

    def predict(self, layer: int, hidden: Tensor) -> Tensor:
        """``hidden [T, d]`` -> predicted log KVzip scores ``[Hkv, T]``."""
        weight, bias = self.weights[layer], self.biases[layer]
        if hidden.shape[-1] != weight.shape[1]:
            raise MethodUnsupportedError(
                f"the kvzap surrogate {self.meta.get('model', '?')} reads {weight.shape[1]}-wide hidden states; this "
                f"model's are {hidden.shape[-1]} wide: train one for it (python -m tokensift.kv.kvzap_train)"
            )
        return (hidden.to(weight.dtype) @ weight.T + bias).T


def save_surrogate(path: Path, weights: list[Tensor], biases: list[Tensor], meta: dict[str, Any]) -> None:
    """Write a surrogate as safetensors (``layer{i}.weight`` / ``layer{i}.bias``), ``meta`` as JSON metadata."""
    from safetensors.torch import save_file

    tensors = {f"layer{i}.weight": w.contiguous().float() for i, w in enumerate(weights)}
    tensors |= {f"layer{i}.bias": b.contiguous().float() for i, b in enumerate(biases)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"tokensift": json.dumps(meta)})


@lru_cache(maxsize=4)
def load_surrogate(path: str) -> Surrogate:
    """Read a surrogate written by :func:`save_surrogate`; a missing or malformed file is a clear error."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise ParameterError(f"kvzap surrogate {path} does not exist", option="weights")
    try:
        with safe_open(path, framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("tokensift", "{}"))
            count = int(meta["layers"])
            weights = tuple(handle.get_tensor(f"layer{i}.weight") for i in range(count))
            biases = tuple(handle.get_tensor(f"layer{i}.bias") for i in range(count))
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise ParameterError(f"{path} is not a kvzap surrogate: {exc}", option="weights") from exc
    return Surrogate(weights, biases, meta)


@register
@dataclass
class KVzap(GlobalBudgetPress):
    """Predicted KVzip scores from each layer's input hidden states; one budget for the whole model (ragged).

    ``weights`` is a surrogate file (default: the one trained for SmolLM2-135M); a model whose layer count or
    width differs from the surrogate's is refused. It costs one ``[T, d] x [d, Hkv]`` product per layer.
    """

    name: ClassVar[str] = "kvzap"
    paper: ClassVar[Paper] = Paper(
        "Jeblick & Jegou, 2026", "KVzap: Fast, Adaptive, and Faithful KV Cache Pruning", arxiv="2601.07891"
    )
    summary: ClassVar[str] = "KVzip's scores predicted from hidden states by a linear map per layer; no repeat pass"
    needs_hidden = True

    protect_first: int = option(4, low=0)
    weights: str = field(default=str(BUNDLED))
    """Path of the surrogate (safetensors written by ``tokensift.kv.kvzap_train``)."""

    def surrogate(self, view: LayerView) -> Surrogate:
        found = load_surrogate(self.weights)
        if found.layers != view.n_layers:
            raise MethodUnsupportedError(
                f"the kvzap surrogate {found.meta.get('model', '?')} has {found.layers} layers; this model has "
                f"{view.n_layers}: train one for it (python -m tokensift.kv.kvzap_train)"
            )
        return found

    def score(self, view: LayerView) -> Tensor:
        if view.hidden is None:
            raise MethodUnsupportedError("kvzap reads each layer's input hidden states, which this caller did not keep")
        predicted = self.surrogate(view).predict(view.layer, view.hidden[0])
        if predicted.shape[0] != view.kv_heads:
            raise MethodUnsupportedError(
                f"the kvzap surrogate predicts {predicted.shape[0]} KV heads; this model has {view.kv_heads}"
            )
        return predicted
