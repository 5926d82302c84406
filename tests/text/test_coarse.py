"""Coarse-to-fine budgets: blocks at every level, lexical ranking, and ``coarse`` around every text method."""

import pytest

from tests.text.helpers import scorer
from tokensift.methods import build, compositions
from tokensift.text import compress
from tokensift.text.api import Compressor
from tokensift.text.lexical import lexrank, relevance, tfidf
from tokensift.text.units import Protect, blocks, segment

DOCS = [
    "the cat sat on the mat and the cat ran .",
    "a dog ran to the house and the dog sat down .",
    "one two three four five six seven eight nine zero .",
]


@pytest.fixture
def tiny(word_tokenizer):
    return scorer(word_tokenizer)


def block_texts(parts, level="auto"):
    seg = segment(parts, Protect())
    return ["".join(seg.units[i].text for i in b).strip() for b in blocks(seg, level)]


def test_blocks_fall_back_from_documents_to_paragraphs_to_sentences():
    assert block_texts(DOCS) == [d for d in DOCS]
    assert block_texts(["first para. still first.\n\nsecond para."]) == ["first para. still first.", "second para."]
    assert block_texts(["one sentence. Dr. Who came! last one"]) == ["one sentence.", "Dr. Who came!", "last one"]
    assert block_texts(["a b.\n\nc d. e f."], "sentence") == ["a b.", "c d.", "e f."]
    assert block_texts(DOCS, "paragraph") == DOCS


def test_tfidf_relevance_and_lexrank():
    vectors = tfidf(["cat mat", "dog house", "cat dog"])
    assert vectors.norm(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    scores = relevance(DOCS, "where did the dog run")
    assert scores.index(max(scores)) == 1 and scores[2] == 0.0
    central = lexrank(["cat dog", "cat", "dog", "zebra"])
    assert central.index(max(central)) == 0 and central.index(min(central)) == 3
    assert sum(central) == pytest.approx(1.0)
    assert lexrank([]) == []


def test_question_ranked_blocks_are_kept_whole_without_a_model(tiny):
    result = compress(
        DOCS,
        keep_tokens=11,
        method="coarse:random",
        model=tiny,
        question="where did the dog run",
        options={"coarse_factor": 1.0},
    )
    assert result.compressed[0] == "" and result.compressed[2] == ""
    assert result.compressed[1] == DOCS[1].rstrip(" .") + "." or len(result.compressed[1].split()) <= 11
    assert result.tokens_after <= 11


def test_coarse_keeps_only_words_of_kept_blocks_and_holds_the_budget(tiny):
    compressor = Compressor("coarse:random", model=tiny, options={"rank": "lexrank", "coarse_factor": 1.5})
    prepared = compressor.prepare(DOCS)
    result = compressor.compress(prepared, keep=0.4)
    kept_blocks = [k for k, text in enumerate(result.compressed) if text]
    assert len(kept_blocks) <= 2
    assert result.tokens_after <= result.keep_tokens
    assert prepared.scores is not None and prepared.scores.state["order"][0] != 2  # the number list is not central


@pytest.mark.parametrize("spec", compositions("text"))
def test_every_text_composition_runs_within_budget(tiny, spec):
    method = build("text", spec)
    result = compress(" ".join(DOCS * 3), keep=0.5, method=method, model=tiny, question="the dog")
    assert 0 < result.tokens_after <= result.keep_tokens


def test_uses_model_follows_the_wrapped_method():
    assert build("text", "coarse:random").uses_model() is False
    assert build("text", "coarse:random", rank="perplexity").uses_model() is True
    assert build("text", "coarse:surprisal").uses_model() is True
