import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tokensift.errors import ParameterError
from tokensift.scores import lm_scores, next_token_scores, plan_windows


def test_next_token_scores_match_log_softmax():
    torch.manual_seed(1)
    logits = torch.randn(7, 11)
    ids = torch.randint(0, 11, (7,))
    surprisal, entropy = next_token_scores(logits, ids)
    assert math.isnan(surprisal[0]) and math.isnan(entropy[0])
    logp = torch.log_softmax(logits, -1)
    for t in range(1, 7):
        assert surprisal[t] == pytest.approx(-logp[t - 1, ids[t]].item(), abs=1e-6)
        assert entropy[t] == pytest.approx(-(logp[t - 1].exp() * logp[t - 1]).sum().item(), abs=1e-6)


def test_next_token_scores_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected logits"):
        next_token_scores(torch.zeros(3, 5), torch.zeros(4, dtype=torch.long))


@given(length=st.integers(1, 300), window=st.integers(2, 64), data=st.data())
def test_windows_score_every_token_once_with_enough_context(length, window, data):
    stride = data.draw(st.integers(1, window))
    plans = plan_windows(length, window, stride)
    covered = [t for _, stop, first in plans for t in range(first, stop)]
    assert covered == list(range(length))
    for start, stop, first in plans:
        assert stop - start <= window and start >= 0
        if start > 0:
            assert first - start >= window - stride


@pytest.mark.parametrize("window,stride", [(1, 1), (8, 0), (8, 9)])
def test_plan_windows_rejects_bad_sizes(window, stride):
    with pytest.raises(ParameterError):
        plan_windows(100, window, stride)


def test_lm_scores_equal_model_logits(llama):
    ids = torch.randint(2, 64, (20,), generator=torch.Generator().manual_seed(3))
    scores = lm_scores(llama, ids, prefix_id=1)
    logits = llama(torch.cat([torch.tensor([1]), ids])[None]).logits[0]
    logp = torch.log_softmax(logits, -1)
    expected = -logp[torch.arange(20), ids]
    torch.testing.assert_close(scores.surprisal, expected, atol=1e-5, rtol=0)
    assert scores.windows == [(0, 20, 0)]
    assert scores.perplexity == pytest.approx(math.exp(expected.mean().item()), rel=1e-5)


def test_windowed_scores_match_unwindowed_where_both_fit(llama):
    ids = torch.randint(2, 64, (50,), generator=torch.Generator().manual_seed(4))
    full = lm_scores(llama, ids, prefix_id=1)
    windowed = lm_scores(llama, ids, prefix_id=1, window=16, stride=8)
    assert len(windowed.windows) > 1
    # tokens of the first window see the same context in both runs
    torch.testing.assert_close(windowed.surprisal[:16], full.surprisal[:16], atol=1e-5, rtol=0)
    # every later token equals an unwindowed run over exactly its window's tokens
    for start, stop, first in windowed.windows[1:]:
        alone = lm_scores(llama, ids[start:stop], prefix_id=1)
        torch.testing.assert_close(windowed.surprisal[first:stop], alone.surprisal[first - start :], atol=1e-5, rtol=0)
        torch.testing.assert_close(windowed.entropy[first:stop], alone.entropy[first - start :], atol=1e-5, rtol=0)
    # a window as long as the input is the unwindowed run
    torch.testing.assert_close(lm_scores(llama, ids, prefix_id=1, window=50).surprisal, full.surprisal)


def test_without_prefix_first_token_is_unscored(llama):
    scores = lm_scores(llama, torch.tensor([5, 6, 7]))
    assert math.isnan(scores.surprisal[0]) and not torch.isnan(scores.surprisal[1:]).any()


def test_window_longer_than_context_is_rejected(llama):
    with pytest.raises(ParameterError, match="exceeds the model's context of 128"):
        lm_scores(llama, torch.arange(2, 10), window=128, prefix_id=1)
