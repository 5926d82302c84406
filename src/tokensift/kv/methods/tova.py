"""TOVA: token omission via attention of the current token.

Oren et al., 2024, "Transformers are Multi-State RNNs": at each step drop the token the *current* query
attends to least, averaged over the layer's heads (one policy per layer). At prefill the current query
is the last token of the prompt; while decoding it is each new token.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokensift.kv.press import LayerView, Press, per_head
from tokensift.scores import attention_received


@dataclass
class TOVAPress(Press):
    """Attention from the last query, mean over all heads of the layer; the last token is always kept."""

    protect_last: int = 1
    query_rows = 1
    online = True

    def score(self, view: LayerView) -> Tensor:
        rows = view.queries[:, :, -1:]
        received = attention_received(rows, view.keys, scaling=view.scaling, per_kv_head=False)[0]
        return per_head(received.mean(0), view.kv_heads)

    def update_online(self, scores: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        return per_head(attention.mean(0), attention.shape[0]) if attention.dim() == 2 else attention
