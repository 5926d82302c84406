"""TidalDecode: a few layers choose the tokens, every other layer of the step reads the same positions.

Yang et al., 2024, "TidalDecode: Fast and Accurate LLM Decoding with Position Persistent Sparse Attention"
(arXiv:2410.05076): the tokens that matter to a decoding step overlap strongly across layers, so only the
token-selection layers compute the query's attention over the whole cache; they attend fully and keep the
``k`` positions with the highest attention (summed over the heads, one set for all heads); the layers after
them attend only to those positions until the re-selection layer picks again. The first ``dense_layers``
layers attend fully; the first full-attention layer after them selects, ``reselect_layer`` (default: the
full-attention layer nearest 40 % of the depth, the paper's choice of layer 13 of 32) selects again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.sparse import DecodeState, SparseDecode, group_logits, top_positions
from tokensift.registry import Paper, option, register


@register
@dataclass
class TidalDecode(SparseDecode):
    """Selection layers attend fully and pick ``k`` positions; the layers after them reuse the positions."""

    name: ClassVar[str] = "tidaldecode"
    paper: ClassVar[Paper] = Paper(
        "Yang et al., 2024",
        "TidalDecode: Fast and Accurate LLM Decoding with Position Persistent Sparse Attention",
        arxiv="2410.05076",
    )
    summary: ClassVar[str] = "selection layers pick the positions; the following layers reuse them"

    dense_layers: int = option(2, low=0)
    reselect_layer: int | None = option(None, low=0)

    def selecting(self, layers: list[int], depth: int) -> set[int]:
        """The full-attention layers that choose (the first after the dense ones, and the re-selection layer)."""
        later = [i for i in layers if i >= self.dense_layers]
        if not later:
            return set()
        again = self.reselect_layer
        if again is None:
            again = min(later, key=lambda i: (abs(i - 0.4 * (depth - 1)), i))
        return {later[0], again}

    def positions(
        self, state: DecodeState, layer: int, query: Tensor, keys: Tensor, scaling: float, allowed: Tensor | None
    ) -> Tensor | None:
        if layer < self.dense_layers:
            return None
        chosen = state.shared.get("selecting")
        if chosen is None:
            chosen = state.shared["selecting"] = self.selecting(state.layers, state.layers[-1] + 1)
        n = keys.shape[2]
        if layer in chosen or state.shared.get("length") != n:  # a selection layer (or the first of a new step)
            weights = group_logits(query, keys, scaling, allowed).softmax(-1).sum(2).sum(1, keepdim=True)
            picked = top_positions(weights, self.budget_for(n)).expand(-1, keys.shape[1], -1)
            state.shared.update(positions=picked, length=n)
            return None  # a selection layer attends fully
        return state.shared["positions"]
