"""Every text method on a tiny random model: structure survives, budgets hold, the papers' mechanics hold."""

import json

import pytest
import torch
from transformers import DynamicCache

from tests.text.helpers import bare_words, scorer, sentence_text
from tokensift.errors import ParameterError, UnknownMethodError
from tokensift.methods import get_method, list_methods, names
from tokensift.scores.gradient import gradient_x_input, greedy_continuation
from tokensift.text import Protect, compress
from tokensift.text.api import Compressor
from tokensift.text.methods.llmlingua import LLMLinguaMethod, prune_cache
from tokensift.text.methods.longllmlingua import LongLLMLinguaMethod, question_perplexity

METHODS = names("text")


@pytest.fixture
def tiny(word_tokenizer):
    return scorer(word_tokenizer)


def test_all_text_methods_are_registered_with_papers():
    found = {m.name: m for m in list_methods("text")}
    assert set(found) == set(METHODS)
    assert all(m.paper or m.baseline for m in found.values())
    with pytest.raises(UnknownMethodError, match="unknown text method 'zip'"):
        get_method("zip", "text")


@pytest.mark.parametrize("method", METHODS)
def test_structure_survives_every_method(tiny, method):
    code = "```\nthe cat = 1\n```"
    text = (
        f"the big red dog sat on the mat and ran to the house .\n{code}\n"
        "one two three `inline code` four five six <keep>seven eight nine</keep> zero the cat sat ."
    )
    result = compress(text, keep=0.6, method=method, model=tiny, question="the cat")
    assert code in result.compressed and "`inline code`" in result.compressed
    assert "seven eight nine" in result.compressed and "<keep>" not in result.compressed
    assert result.tokens_after <= result.keep_tokens
    source = text.replace("<keep>", " ").replace("</keep>", " ")
    assert set(bare_words(result.compressed)) <= set(bare_words(source))


@pytest.mark.parametrize("method", METHODS)
def test_json_stays_valid_with_keys_and_numbers(tiny, method):
    data = {"user": "the big red dog sat on the mat", "n": 3, "items": ["one two three four", "cat"], "ok": True}
    text = json.dumps(data, indent=2)
    result = compress(text, keep=0.7, method=method, model=tiny)
    parsed = json.loads(result.compressed)
    assert list(parsed) == list(data) and parsed["n"] == 3 and parsed["ok"] is True
    assert len(parsed["items"]) == 2 and set(parsed["user"].split()) <= set(data["user"].split())


def test_markdown_table_keeps_pipes_and_header(tiny):
    table = "| name | note |\n|---|---|\n| the cat | sat on the mat and ran |\n| a dog | big red house |"
    out = compress(table, keep=0.8, method="surprisal", model=tiny).compressed
    lines = out.split("\n")
    assert lines[:2] == ["| name | note |", "|---|---|"] and [line.count("|") for line in lines] == [3, 3, 3, 3]


@pytest.mark.parametrize("method", METHODS)
def test_chat_roles_survive_and_older_turns_shrink_more(tiny, method):
    chat = [
        {"role": "system", "content": sentence_text(60, 1)},
        {"role": "user", "content": sentence_text(60, 2)},
        {"role": "assistant", "content": sentence_text(60, 3)},
        {"role": "user", "content": sentence_text(60, 4)},
    ]
    plain = compress(chat, keep=0.5, method=method, model=tiny)
    assert [m["role"] for m in plain.compressed] == ["system", "user", "assistant", "user"]
    decayed = compress(chat, keep=0.5, method="surprisal", model=tiny, turn_decay=0.3)
    first, last = (len(decayed.compressed[i]["content"].split()) for i in (0, 3))
    assert first < last


def test_documents_keep_their_count_and_reorder_is_a_permutation(tiny):
    docs = [sentence_text(40, s) for s in range(4)]
    method = LongLLMLinguaMethod(reorder=True)
    result = compress(docs, keep=0.5, method=method, model=tiny, question="the red dog")
    assert isinstance(result.compressed, list) and len(result.compressed) == 4
    assert result.tokens_after <= result.keep_tokens


def test_longllmlingua_question_perplexity_matches_a_direct_computation(tiny):
    doc, question = tiny.encode("the cat sat on the mat")[0], tiny.encode("the dog ran")[0]
    ids = torch.cat([torch.tensor([1]), doc, question])
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(ids[None]).logits[0].double(), -1)
    n = len(question)
    expected = -logp[-n - 1 : -1].gather(-1, ids[-n:, None]).mean()
    assert question_perplexity(tiny, doc, question) == pytest.approx(float(expected), rel=1e-5)


def test_llmlingua_feeds_every_token_once_thanks_to_the_kv_cache(tiny):
    fed = []
    forward = tiny.model.forward

    def spy(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        fed.append(int(ids.shape[1]))
        assert kwargs.get("past_key_values") is not None
        return forward(*args, **kwargs)

    tiny.model.forward = spy
    text = sentence_text(300, 7)  # one block: the budget controller needs no extra pass
    result = compress(text, keep=0.4, method=LLMLinguaMethod(segment_tokens=50), model=tiny)
    tokens = len(tiny.encode(text)[0])
    assert sum(fed) == tokens + 1  # BOS + each token once: the compressed prefix is never re-read
    assert len(fed) > 4 and result.tokens_after <= result.keep_tokens


def test_llmlingua_budget_controller_drops_whole_blocks(tiny):
    paragraphs = [sentence_text(60, s) for s in range(6)]
    result = compress("\n\n".join(paragraphs), keep=0.2, method="llmlingua", model=tiny)
    kept_blocks = [p for p in result.compressed.split("\n\n") if p.strip()]
    assert len(kept_blocks) < 6


def test_prune_cache_keeps_the_given_positions():
    cache = DynamicCache()
    keys = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).view(2, 3, 5, 4)
    cache.update(keys, keys + 1, 0)
    prune_cache(cache, [0, 3, 4])
    assert cache.get_seq_length() == 3
    assert torch.equal(cache.layers[0].keys, keys[:, :, [0, 3, 4]])


def test_gradient_x_input_scores_every_input_token(llama):
    ids = torch.tensor([1, 5, 6, 7, 8, 9])
    target = greedy_continuation(llama, ids, 3)
    scores = gradient_x_input(llama, ids, target)
    assert target.shape == (3,) and scores.shape == (6,) and (scores >= 0).all() and scores.sum() > 0
    assert all(p.grad is None for p in llama.parameters())


def test_attribution_windows_long_inputs(tiny):
    text = sentence_text(400, 5)  # longer than the tiny model's 128-token context
    result = compress(text, ratio=0.5, method="attribution", model=tiny, options={"window": 100})
    assert result.tokens_after <= result.keep_tokens and all(u.score is not None for u in result.units)


def test_prepare_once_compress_to_several_budgets(tiny):
    compressor = Compressor("selective_context", model=tiny, options={"granularity": "sentence"})
    prepared = compressor.prepare(sentence_text(200, 2))
    half, third = compressor.compress(prepared, ratio=0.5), compressor.compress(prepared, keep=0.33)
    assert third.tokens_after < half.tokens_after and half.seconds["score"] == third.seconds["score"]
    alias = compressor.compress(prepared, rate=0.33)  # LLMLingua's name for keep
    assert (alias.compressed, alias.keep_tokens) == (third.compressed, third.keep_tokens)
    with pytest.raises(ParameterError, match="rate is another name for keep"):
        compressor.compress(prepared, rate=0.33, keep=0.33)
    with pytest.raises(ParameterError, match="not ratio and keep"):
        compressor.compress(prepared, ratio=0.5, keep=0.5)


def test_unknown_method_option_is_a_parameter_error(tiny):
    with pytest.raises(ParameterError, match="surprisal takes no option 'colour'"):
        compress("the cat", rate=0.5, method="surprisal", model=tiny, options={"colour": 1})


def test_protect_numbers_option(tiny):
    text = "the cat 12 sat 34 on 56 the mat 78 and 90 ran"
    kept = compress(text, keep_tokens=6, method="random", model=tiny, protect=Protect(numbers=True)).compressed
    assert all(n in kept for n in ("12", "34", "56", "78", "90"))
    loose = compress(text, keep_tokens=6, method="random", model=tiny)
    assert loose.tokens_after <= 6
