import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tokensift.errors import ParameterError
from tokensift.reduce import gather_tokens
from tokensift.select import Budget, topk_indices


def test_topk_keeps_highest_in_position_order():
    scores = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2])
    assert topk_indices(scores, 2).tolist() == [1, 3]


def test_protected_positions_count_toward_budget():
    scores = torch.tensor([0.0, 0.9, 0.8, 0.7, 0.0, 0.0])
    assert topk_indices(scores, 3, protect_first=1, protect_last=1).tolist() == [0, 1, 5]


def test_ties_go_to_earlier_positions():
    assert topk_indices(torch.zeros(6), 3).tolist() == [0, 1, 2]


def test_topk_rejects_impossible_budgets():
    with pytest.raises(ParameterError, match="cannot keep 7 of 6"):
        topk_indices(torch.zeros(6), 7)
    with pytest.raises(ParameterError, match="do not fit"):
        topk_indices(torch.zeros(6), 2, protect_first=2, protect_last=1)


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40), st.data())
def test_topk_is_the_top_scores(values, data):
    scores = torch.tensor(values)
    k = data.draw(st.integers(0, len(values)))
    kept = topk_indices(scores, k)
    assert kept.tolist() == sorted(set(kept.tolist())) and len(kept) == k
    if 0 < k < len(values):
        dropped = [i for i in range(len(values)) if i not in set(kept.tolist())]
        assert scores[kept].min() >= scores[dropped].max()


def test_one_budget_convention():
    assert Budget(keep=0.25).tokens(10) == 2  # round half to even
    assert Budget(ratio=0.74).tokens(10) == 3
    assert Budget(ratio=0.67).kept_fraction == 0.33  # 1 - 0.67 without the float residue
    assert Budget(keep_tokens=4).tokens(10) == 4
    assert Budget(ratio=0.99).tokens(10) == 1  # at least one token
    assert not Budget(ratio=0.0).active and not Budget(keep=1.0).active and not Budget().active
    assert Budget(keep_tokens=10).active and Budget(keep=0.5).describe() == "keep 0.5"
    for kwargs, option in (
        ({"ratio": 1.0}, "ratio"),
        ({"ratio": float("nan")}, "ratio"),
        ({"keep": 0.0}, "keep"),
        ({"keep": True}, "keep"),
        ({"keep_tokens": 0}, "keep_tokens"),
        ({"keep_tokens": 2.5}, "keep_tokens"),
        ({"ratio": 0.5, "keep": 0.5}, "keep"),
    ):
        with pytest.raises(ParameterError) as info:
            Budget(**kwargs)
        assert info.value.option == option
    with pytest.raises(ParameterError, match="larger than the input"):
        Budget(keep_tokens=11).tokens(10)


def test_gather_tokens_keeps_rows_and_shrinks_storage():
    states = torch.arange(2 * 5 * 3, dtype=torch.float32).view(1, 2, 5, 3)
    idx = torch.tensor([[[0, 4], [1, 2]]])
    kept = gather_tokens(states, idx)
    assert kept.shape == (1, 2, 2, 3)
    assert kept[0, 0].tolist() == [states[0, 0, 0].tolist(), states[0, 0, 4].tolist()]
    assert kept[0, 1].tolist() == [states[0, 1, 1].tolist(), states[0, 1, 2].tolist()]
    assert kept.untyped_storage().nbytes() == 2 * 2 * 3 * 4
