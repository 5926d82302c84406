import html as html_lib
import itertools
import json
import re
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tokensift.errors import EmptyInputError, ParameterError
from tokensift.inspection import FlagRule, inspect_text
from tokensift.report.html import inspection_html
from tokensift.report.segments import segments
from tokensift.scores import lm_scores

LOG = "user admin login ok\nuser admin request ok\n\nerror error failed failed logout\nuser admin logout ok\n"


def run(llama, tok, text=LOG, **kwargs):
    return inspect_text(text, llama, tok, model_name="tiny", prefix_id=1, **kwargs)


def test_records_carry_text_offsets_and_model_scores(llama, word_tokenizer):
    result = run(llama, word_tokenizer)
    assert [t.text for t in result.tokens] == LOG.split()
    for token in result.tokens:
        assert LOG[token.start : token.end] == token.text
    ids = torch.tensor([t.id for t in result.tokens])
    expected = lm_scores(llama, ids, prefix_id=1)
    assert [t.surprisal for t in result.tokens] == pytest.approx(expected.surprisal.tolist(), abs=1e-6)
    assert result.perplexity == pytest.approx(expected.perplexity)


def test_quantile_and_zscore_flags(llama, word_tokenizer):
    result = run(llama, word_tokenizer, rule=FlagRule(quantile=0.8))
    values = torch.tensor([t.surprisal for t in result.tokens])
    assert result.threshold == pytest.approx(float(torch.quantile(values, 0.8)))
    assert [t.flagged for t in result.tokens] == [v > result.threshold for v in values.tolist()]
    assert 1 <= sum(t.flagged for t in result.tokens) <= 4
    z = run(llama, word_tokenizer, rule=FlagRule(zscore=1.0))
    assert z.threshold == pytest.approx(float(values.mean() + values.std(unbiased=False)))
    assert z.rule.quantile is None and "z-score > 1" in z.rule.describe()


@pytest.mark.parametrize("quantile", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_quantile_outside_open_interval_is_rejected(quantile):
    with pytest.raises(ParameterError, match="strictly between 0 and 1"):
        FlagRule(quantile=quantile)


def test_bad_inputs(llama, word_tokenizer):
    with pytest.raises(ParameterError, match="finite"):
        FlagRule(zscore=float("inf"))
    with pytest.raises(EmptyInputError):
        run(llama, word_tokenizer, text=" \n ")
    with pytest.raises(ParameterError, match="max_tokens"):
        run(llama, word_tokenizer, max_tokens=0)


def test_truncation_is_explicit(llama, word_tokenizer):
    result = run(llama, word_tokenizer, max_tokens=5)
    assert len(result.tokens) == 5 and result.total_tokens == len(LOG.split()) and result.truncated
    doc = result.as_dict()
    assert doc["truncated"] and doc["tokens_scored"] == 5 and doc["tokens_in_input"] == 17


def test_long_input_is_windowed_not_truncated(llama, word_tokenizer):
    text = " ".join(["the cat sat on the mat ."] * 40)  # 280 tokens > 128 context
    result = run(llama, word_tokenizer, text=text)
    assert len(result.windows) > 1 and not result.truncated
    assert all(t.surprisal is not None for t in result.tokens) and len(result.tokens) == 280


def test_line_summary_ranks_lines_by_mean_surprisal(llama, word_tokenizer):
    result = run(llama, word_tokenizer)
    assert [r.line for r in sorted(result.lines, key=lambda r: r.line)] == [1, 2, 4, 5]  # blank line 3 left out
    for record in result.lines:
        members = [t.surprisal for t in result.tokens if LOG.count("\n", 0, t.start) + 1 == record.line]
        assert record.mean_surprisal == pytest.approx(sum(members) / len(members))
        assert record.max_surprisal == pytest.approx(max(members))
    ranked = sorted(result.lines, key=lambda r: r.rank)
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    assert all(a.mean_surprisal >= b.mean_surprisal for a, b in itertools.pairwise(ranked))
    assert ranked[0].text in LOG.splitlines()


def test_json_document_is_one_record_per_token(llama, word_tokenizer):
    doc = json.loads(json.dumps(run(llama, word_tokenizer).as_dict()))
    assert len(doc["tokens"]) == 17  # words of LOG
    assert set(doc["tokens"][0]) == {"index", "id", "text", "start", "end", "surprisal", "entropy", "flagged"}
    assert doc["units"] == "nats" and doc["flag_rule"]["quantile"] == 0.95


def test_html_reproduces_the_text_with_a_legend(llama, word_tokenizer):
    text = 'the <cat> & dog\n  sat ; on "mat"'
    result = run(llama, word_tokenizer, text=text)
    page = inspection_html(result)
    body = page.split('<div class="text">', 1)[1].split("</div>", 1)[0]
    assert html_lib.unescape(re.sub(r"<[^>]+>", "", body)) == text
    assert 'class="legend"' in page and "surprisal" in page and "<script" not in page
    assert body.count('<span class="t') == len(result.tokens)


@dataclass
class Span:
    start: int
    end: int


@given(st.text(max_size=40), st.lists(st.tuples(st.integers(0, 45), st.integers(0, 10)), max_size=12))
def test_segments_reproduce_any_text(text, raw):
    spans = sorted((Span(min(a, len(text)), min(a + n, len(text))) for a, n in raw), key=lambda s: s.start)
    assert "".join(piece for piece, _ in segments(text, spans)) == text
