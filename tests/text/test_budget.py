"""Exact budgets: the knapsack core and the measured, repaired selection on real tokenizers."""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.text.helpers import bare_words, bpe_tokenizer, scorer, sentence_text
from tokensift.errors import BudgetError, EmptyInputError, ParameterError
from tokensift.methods import names
from tokensift.select import knapsack_select
from tokensift.text.api import Compressor, compress


@given(
    st.lists(st.tuples(st.floats(-5, 5), st.integers(0, 6)), min_size=0, max_size=9),
    st.integers(0, 20),
)
def test_knapsack_is_optimal_against_brute_force(items, budget):
    values, costs = [v for v, _ in items], [c for _, c in items]
    chosen = knapsack_select(values, costs, budget)
    assert sum(costs[i] for i in chosen) <= budget
    shift = max([0.0] + [-v / max(c, 1) for v, c in items])  # the solver fills: compare shifted values

    def worth(subset):
        return sum(values[i] + shift * costs[i] for i in subset)

    best = max(
        worth(s)
        for r in range(len(items) + 1)
        for s in itertools.combinations(range(len(items)), r)
        if sum(costs[i] for i in s) <= budget
    )
    assert worth(chosen) == pytest.approx(best, abs=1e-6)


def test_knapsack_large_instances_use_density_order():
    chosen = knapsack_select([3.0, 1.0, 2.0], [1, 1, 1], 2, max_cells=1)
    assert chosen == [0, 2]


@pytest.fixture(scope="module")
def tokenizers(request):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import WORDS

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    word = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>")
    return {
        "word": word,
        "bpe": bpe_tokenizer(pretokenize=True),
        "bpe-cross-word": bpe_tokenizer(pretokenize=False),
    }


@pytest.fixture(scope="module")
def tiny(tokenizers):
    return scorer(tokenizers["word"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_words=st.integers(60, 400),
    seed=st.integers(0, 10_000),
    rate=st.floats(0.15, 0.95),
    target=st.sampled_from(["word", "bpe", "bpe-cross-word"]),
    method=st.sampled_from(names("text")),
)
def test_budget_sweep_rate_and_target_tokens(tiny, tokenizers, n_words, seed, rate, target, method):
    text = sentence_text(n_words, seed)
    compressor = Compressor(method, model=tiny, target_tokenizer=tokenizers[target])
    prepared = compressor.prepare(text)
    by_rate = compressor.compress(prepared, rate=rate)
    goal = round(rate * by_rate.tokens_before)
    assert by_rate.tokens_after <= goal
    if by_rate.tokens_before >= 100:
        assert abs(by_rate.rate - rate) <= 0.02
    assert by_rate.tokens_after == compressor.counter.count(by_rate.compressed)
    budget = max(1, by_rate.tokens_before // 3)
    by_count = compressor.compress(prepared, keep_tokens=budget)
    assert by_count.tokens_after <= budget
    assert by_count.tokens_after >= (0.98 * budget if budget >= 50 else budget - 1)
    source = set(bare_words(text))
    assert set(bare_words(by_rate.compressed)) <= source and set(bare_words(by_count.compressed)) <= source


def test_output_is_the_input_words_in_order(tiny):
    text = sentence_text(150, 3)
    out = compress(text, rate=0.4, method="surprisal", model=tiny).compressed
    source = iter(bare_words(text))
    assert all(any(w == s for s in source) for w in bare_words(out))  # a subsequence


def test_target_at_or_above_the_input_returns_it_unchanged(tiny):
    text = sentence_text(40, 1)
    result = compress(text, keep_tokens=10_000, method="surprisal", model=tiny)
    assert result.compressed == text and result.rate == 1.0
    assert "returned unchanged" in result.notes[0]
    assert compress(text, rate=1.0, method="random", model=tiny).compressed == text


def test_protected_spans_over_budget_say_by_how_much(tiny):
    text = "the cat <keep>one two three four five six seven eight nine</keep> sat"
    with pytest.raises(BudgetError, match=r"protected spans alone need 9 tokens, 5 more than the budget of 4"):
        compress(text, keep_tokens=4, method="random", model=tiny)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"rate": 0.0}, ParameterError, r"rate must be in \(0, 1\]"),
        ({"rate": 1.5}, ParameterError, r"rate must be in \(0, 1\]"),
        ({"rate": float("nan")}, ParameterError, "rate"),
        ({"keep": 0.0}, ParameterError, r"keep must be in \(0, 1\]"),
        ({"ratio": 1.0}, ParameterError, r"ratio must be in \[0, 1\)"),
        ({"ratio": -0.1}, ParameterError, r"ratio must be in \[0, 1\)"),
        ({"keep_tokens": 0}, ParameterError, "from 1 to"),
        ({}, ParameterError, "give a budget"),
        ({"keep": 0.5, "keep_tokens": 3}, ParameterError, "not keep and keep_tokens"),
    ],
)
def test_bad_budgets(tiny, kwargs, error, match):
    with pytest.raises(error, match=match):
        compress("the cat sat", method="random", model=tiny, **kwargs)


@pytest.mark.parametrize("prompt", ["", "  \n ", [], ["", " "], [{"role": "user", "content": ""}]])
def test_empty_prompts(tiny, prompt):
    with pytest.raises(EmptyInputError):
        compress(prompt, rate=0.5, method="random", model=tiny)


FAITHFUL = (
    "On June 4, 2003, the University of Cambridge paid $3.5 million to Charles Darwin of New York City. "
    'He said "never cut me apart" twice, and the rest of the words are plain filler words here. '
) * 3


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_no_budget_cuts_a_bond_apart(tiny, tokenizers, seed, rate):
    compressor = Compressor("random", model=tiny, target_tokenizer=tokenizers["bpe"], options={"seed": seed})
    prepared = compressor.prepare(FAITHFUL)
    result = compressor.compress(prepared, rate=rate)
    bonds = prepared.job.segmented.bonds
    assert len(bonds) == 3 * 5
    for bond in bonds:
        assert len({result.units[i].kept for i in bond}) == 1, [result.units[i].text for i in bond]
    assert result.tokens_after <= round(rate * result.tokens_before)
    assert abs(result.rate - rate) <= 0.02
    text = result.compressed
    assert text.count("Darwin") == text.count("Charles Darwin") and text.count("2003") == text.count("June 4, 2003")


def test_phrase_units_reach_every_method(tiny, tokenizers):
    compressor = Compressor("random", model=tiny, target_tokenizer=tokenizers["bpe"], units="sentence")
    prepared = compressor.prepare("the cat sat on the mat. a dog ran to the house. the end came soon.")
    result = compressor.compress(prepared, rate=0.5)
    kept = [u.text for u in result.units if u.kept]
    assert "".join(kept).strip() in {"the cat sat on the mat.", "a dog ran to the house."}


def test_a_dropped_sentence_end_moves_to_the_last_kept_word(tokenizers):
    from tokensift.text.budget import render
    from tokensift.text.units import Protect, segment

    seg = segment(["the cat sat on the mat. a dog ran off! Dr. Who"], Protect())
    keep = [u.text.strip() in {"the", "cat", "a", "dog", "Who"} for u in seg.units]
    assert render(seg, keep) == ["the cat the. a dog! Who"]
