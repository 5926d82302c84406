import pytest
import torch

from tokensift.errors import ParameterError
from tokensift.scores import average_rotation, pool_scores
from tokensift.scores.expected import rope_angles
from tokensift.select import chunk_indices, head_adaptive_indices, pyramid_budgets


def test_pyramid_budgets_fall_with_depth_and_sum_exactly():
    budgets = pyramid_budgets(30, 250, 1000, window=32, beta=20)
    assert sum(budgets) == 30 * 250
    assert budgets == sorted(budgets, reverse=True) and budgets[0] > budgets[-1]
    capped = pyramid_budgets(4, 900, 1000)
    assert sum(capped) == 3600 and max(capped) <= 1000
    assert pyramid_budgets(1, 5, 10) == [5]
    with pytest.raises(ParameterError):
        pyramid_budgets(3, 11, 10)


def test_head_adaptive_budget_is_shared_and_exact():
    scores = torch.zeros(3, 20)
    scores[0, :10] = 1.0  # head 0 wants many tokens, head 2 none
    scores[1, 5] = 1.0
    kept = head_adaptive_indices(scores, 6, safeguard=0.34)
    assert sum(len(k) for k in kept) == 18
    assert len(kept[0]) > len(kept[2]) >= 2  # safeguard: int(6 * 0.34) = 2
    assert all(torch.equal(k, k.sort().values) for k in kept)
    protected = head_adaptive_indices(scores, 4, safeguard=0.0, protect_first=1, protect_last=1)
    assert all(0 in k.tolist() and 19 in k.tolist() for k in protected)


def test_chunk_indices_keep_whole_chunks_and_exact_budget():
    scores = torch.zeros(50)
    scores[20:30] = 5.0
    scores[41] = 9.0  # one high token cannot beat a whole good chunk on mean
    kept = chunk_indices(scores, 15, 10)
    assert len(kept) == 15
    assert set(range(20, 30)) <= set(kept.tolist())
    kept = chunk_indices(scores, 12, 10, protect_first=1, protect_last=1)
    assert {0, 49} <= set(kept.tolist()) and len(kept) == 12
    with pytest.raises(ParameterError):
        chunk_indices(scores, 51, 10)


def test_pool_scores_smooths_and_keeps_shape():
    scores = torch.tensor([[0.0, 0.0, 3.0, 0.0, 0.0]])
    assert torch.allclose(pool_scores(scores, 3), torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]]))
    assert pool_scores(scores, 1) is scores


def test_average_rotation_of_one_position_is_that_rotation():
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    vec = torch.randn(8)
    rotation = average_rotation(inv_freq, 5, 1)
    cos, sin = rope_angles(inv_freq, torch.tensor([5]))
    rotated = vec * cos[0] + torch.cat([-vec[4:], vec[:4]]) * sin[0]
    assert torch.allclose(rotation @ vec, rotated, atol=1e-6)
