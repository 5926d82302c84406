"""What a reduction method sees at one layer, and what it answers.

A method is a small dataclass with a ``plan(ctx) -> Plan`` method: from the layer's tokens and signals
it returns a target map (see :mod:`tokensift.reduce.merge`) that removes ``ctx.remove[b]`` tokens from
row ``b``. Imports only torch and the cores, so the method registry stays cheap to load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.errors import ModelError
from tokensift.registry import Paper, validate
from tokensift.scores import attention_received


@dataclass
class LayerContext:
    """One layer's view of a batch at its reduction point. Shapes: ``B`` rows, ``N`` tokens."""

    layer: int
    n_layers: int
    states: Tensor
    """``[B, N, D]`` tokens at the reduction point (after this layer's attention or the whole layer)."""
    before: Tensor
    """``[B, N, D]`` the same tokens before the block that produced ``states``."""
    valid: Tensor
    """``[B, N]`` True for real tokens, False for padding."""
    protected: Tensor
    """``[B, N]`` tokens that are never merged or dropped ([CLS], [SEP])."""
    sizes: Tensor
    """``[B, N]`` input tokens each token stands for (0 for padding)."""
    remove: Tensor
    """``[B]`` tokens to remove from each row at this layer."""
    queries: Tensor | None
    """``[B, H, N, Dh]`` this layer's attention queries (None when the method does not need them)."""
    keys: Tensor | None
    scaling: float
    bias: Tensor
    """``[B, 1, 1, N]`` the additive attention bias the layer used (padding -inf, log sizes)."""
    positions: Tensor | None = None
    """``[B, N]`` each token's index among the input's reducible tokens (an image's patches in raster order, a
    text's tokens between [CLS] and [SEP]): -1 for protected tokens and padding; a merged token has its lowest."""
    reducible: Tensor | None = None
    """``[B]`` reducible tokens in each row's input (the patch grid has this many cells)."""

    @property
    def keep(self) -> Tensor:
        """``[B]`` tokens each row keeps."""
        return self.valid.sum(dim=1) - self.remove

    def _need(self) -> tuple[Tensor, Tensor]:
        if self.queries is None or self.keys is None:
            raise ModelError(f"layer {self.layer}: attention inputs were not captured")
        return self.queries, self.keys

    def key_metric(self) -> Tensor:
        """``[B, N, Dh]`` keys averaged over heads: ToMe's similarity metric."""
        return self._need()[1].float().mean(dim=1)

    def cls_attention(self) -> Tensor:
        """``[B, N]`` attention the first token ([CLS]) pays to each token, averaged over heads."""
        queries, keys = self._need()
        received = attention_received(queries[:, :, :1], keys, scaling=self.scaling, mask=self.bias, per_kv_head=False)
        return received.mean(dim=1)

    def attention(self) -> Tensor:
        """``[B, H, N, N]`` the layer's full attention probabilities (rows: queries)."""
        queries, keys = self._need()
        logits = queries.float() @ keys.float().transpose(-1, -2) * self.scaling + self.bias.float()
        return torch.softmax(logits, dim=-1)


@dataclass(frozen=True)
class Plan:
    """A reduction step: each token's target position (itself, a merge partner, or -1 to drop) and the
    weights of the average a merged token becomes (None: token sizes).

    ``spread`` (``[B, N, N]``, optional) first adds ``spread[b, i, j]`` times token ``j`` to token ``i`` (and as
    much of its size to ``i``'s size): graph propagation of the tokens about to go (GTP-ViT)."""

    target: Tensor
    weights: Tensor | None = None
    spread: Tensor | None = None


class EncoderMethod:
    """Base of every encoder method: subclasses are registered frozen dataclasses with a ``plan``."""

    target: ClassVar[str] = "encoder"
    name: ClassVar[str] = ""
    paper: ClassVar[Paper | None] = None
    summary: ClassVar[str] = ""
    needs_qk: ClassVar[bool] = False
    """Whether ``plan`` reads ``ctx.queries``/``ctx.keys`` (captured from the layer's attention call)."""
    merges: ClassVar[bool] = False
    """Whether removed tokens are merged into kept ones (every input token stays represented) or dropped."""
    propagates: ClassVar[bool] = False
    """Whether removed tokens are dropped after a share of them is propagated to kept ones (``Plan.spread``)."""
    proportional_attention: bool
    """Add log token sizes to attention logits (ToMe), so a merged token counts as many."""

    def __post_init__(self) -> None:
        validate(self)

    def plan(self, ctx: LayerContext) -> Plan:
        raise NotImplementedError
