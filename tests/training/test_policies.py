"""Token selection policies: exact budgets over labelled tokens only, the paper's ordering, reproducible randomness."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensift.errors import ParameterError
from tokensift.methods import build, list_methods, names
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.methods.data import DataScorer
from tokensift.training.stats import IGNORE, TokenStats, token_stats

POLICIES = [m.name for m in list_methods("training") if issubclass(m.cls, TokenPolicy) and m.name != "none"]


def stats_of(loss, valid=None, entropy=None, reference=None):
    loss = torch.tensor(loss, dtype=torch.float32)
    valid = torch.ones_like(loss, dtype=torch.bool) if valid is None else torch.tensor(valid)
    entropy = torch.zeros_like(loss) if entropy is None else torch.tensor(entropy, dtype=torch.float32)
    reference = None if reference is None else torch.tensor(reference, dtype=torch.float32)
    return TokenStats(loss * valid, entropy * valid, valid, reference)


def test_training_target_lists_policies_and_scorers():
    scorers = {m.name for m in list_methods("training") if issubclass(m.cls, DataScorer)}
    assert set(POLICIES) | {"none"} | scorers == set(names("training"))
    assert {"rho1", "eslm"} <= set(POLICIES) and "random" in POLICIES and {"ifd", "sifd"} <= scorers
    assert all(isinstance(build("training", n), TokenPolicy) for n in ["none", *POLICIES])


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 3),
    width=st.integers(1, 12),
    keep=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
    name=st.sampled_from(POLICIES),
)
def test_budget_is_exact_and_only_labelled_tokens_are_chosen(rows, width, keep, seed, name):
    generator = torch.Generator().manual_seed(seed)
    valid = torch.rand(rows, width, generator=generator) > 0.3
    loss = torch.rand(rows, width, generator=generator) * 5
    stats = TokenStats(loss * valid, loss.flip(-1) * valid, valid, torch.rand(rows, width, generator=generator))
    mask = build("training", name, keep=keep).select(stats)
    n = int(valid.sum())
    assert int(mask.sum()) == (0 if n == 0 else min(n, max(1, round(keep * n))))
    assert not bool((mask & ~valid).any())


def test_rho1_keeps_the_highest_excess_loss_not_the_highest_loss():
    stats = stats_of([5.0, 1.0, 3.0, 2.0], reference=[4.9, 0.0, 0.5, 2.5])
    # excess: 0.1, 1.0, 2.5, -0.5 -> the two largest are positions 2 and 1
    assert build("training", "rho1", keep=0.5).select(stats).tolist() == [False, True, True, False]
    assert build("training", "eslm", keep=0.5).select(stats).tolist() == [True, False, True, False]


def test_rho1_without_reference_losses_is_an_error():
    with pytest.raises(ParameterError, match="reference"):
        build("training", "rho1").select(stats_of([1.0, 2.0]))


def test_eslm_keeps_the_tail_at_or_above_its_value_at_risk():
    loss = [0.5, 4.0, 1.0, 3.0, 2.0, 0.1, 5.0, 1.5, 2.5, 0.2]
    mask = build("training", "eslm", ratio=0.7).select(stats_of(loss))
    kept = [v for v, m in zip(loss, mask.tolist(), strict=True) if m]
    dropped = [v for v, m in zip(loss, mask.tolist(), strict=True) if not m]
    assert sorted(kept) == [3.0, 4.0, 5.0] and min(kept) > max(dropped)
    by_entropy = build("training", "eslm", keep=0.2, score="entropy").select(stats_of(loss, entropy=[-v for v in loss]))
    assert torch.nonzero(by_entropy).flatten().tolist() == [5, 9]


def test_entropy_topk_defaults_to_the_papers_twenty_percent_and_none_keeps_all():
    entropy = [float(i) for i in range(10)]
    assert torch.nonzero(
        build("training", "entropy_topk").select(stats_of([1.0] * 10, entropy=entropy))
    ).flatten().tolist() == [8, 9]
    assert int(build("training", "none", keep=0.1).select(stats_of([1.0] * 10)).sum()) == 10


def test_policies_without_a_budget_keep_sixty_percent():
    assert int(build("training", "eslm").select(stats_of([float(i) for i in range(10)])).sum()) == 6


def test_random_is_reproducible_by_seed_and_differs_across_seeds():
    stats = stats_of([1.0] * 40)
    first = build("training", "random", keep=0.5, seed=3).select(stats)
    again = build("training", "random", keep=0.5, seed=3).select(stats)
    other = build("training", "random", keep=0.5, seed=4).select(stats)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_token_stats_shift_labels_and_ignore_minus_100():
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 2] = 10.0  # predicts token 2 confidently
    labels = torch.tensor([[IGNORE, 2, 3, IGNORE]])
    stats = token_stats(logits, labels)
    assert stats.valid.tolist() == [[True, True, False]]
    assert stats.loss[0, 0] < 0.01 and abs(float(stats.loss[0, 1]) - float(torch.log(torch.tensor(5.0)))) < 1e-5
    assert stats.loss[0, 2] == 0 and abs(float(stats.entropy[0, 1]) - float(torch.log(torch.tensor(5.0)))) < 1e-5


@pytest.mark.parametrize("bad", [{"keep": 0.0}, {"ratio": 1.0}, {"keep": 0.5, "ratio": 0.5}, {"score": "margin"}])
def test_bad_budgets_and_options_are_typed_errors(bad):
    with pytest.raises(ParameterError):
        build("training", "eslm", **bad)
