"""A FLOPs estimate for an encoder pass from the tokens each layer processes (reduction overhead excluded)."""

from __future__ import annotations

from torch import Tensor


def encoder_flops(attention_tokens: Tensor, mlp_tokens: Tensor, *, hidden: int, intermediate: int) -> Tensor:
    """``[B, L]`` token counts per layer -> ``[B]`` FLOPs (2 per multiply-add).

    Per layer: q/k/v/output projections ``8 n d^2``, attention scores and weighted sum ``4 n^2 d`` (on the
    attention tokens), MLP ``4 n d d_ff`` (on the MLP tokens). Embeddings, norms and pooling are left out.
    """
    n = attention_tokens.double()
    m = mlp_tokens.double()
    attention = 8 * n * hidden**2 + 4 * n**2 * hidden
    mlp = 4 * m * hidden * intermediate
    return (attention + mlp).sum(dim=1)
