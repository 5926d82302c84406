"""TOVA: token omission via attention of the current token.

Oren et al., 2024, "Transformers are Multi-State RNNs" (arXiv:2401.06104): at each step drop the token
the *current* query attends to least, averaged over the layer's heads (one policy per layer). At prefill
the current query is the last token of the prompt; while decoding it is each new token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView, per_head
from tokensift.registry import Paper, option, register
from tokensift.scores import attention_received


@register
@dataclass
class TOVA(ScorerPress):
    """Attention from the last query, mean over all heads of the layer; the last token is always kept."""

    name: ClassVar[str] = "tova"
    paper: ClassVar[Paper] = Paper("Oren et al., 2024", "Transformers are Multi-State RNNs", arxiv="2401.06104")
    summary: ClassVar[str] = "attention of the current (last) token, mean over the layer's heads"
    query_rows = 1
    online = True

    protect_last: int = option(1, low=0)

    def score(self, view: LayerView) -> Tensor:
        rows = view.queries[:, :, -1:]
        received = attention_received(rows, view.keys, scaling=view.scaling, per_kv_head=False)[0]
        return per_head(received.mean(0), view.kv_heads)

    def update_online(self, scores: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        return per_head(attention.mean(0), attention.shape[0]) if attention.dim() == 2 else attention
