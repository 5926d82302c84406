"""The random baseline: every method must beat keeping tokens at random under the same budget."""

from __future__ import annotations

import torch
from torch import Tensor


def random_scores(shape: tuple[int, ...], *, seed: int = 0) -> Tensor:
    """Uniform random scores of ``shape``, reproducible from ``seed`` (independent of the global RNG)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator)
