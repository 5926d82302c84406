"""Splitting prompts into droppable words and protected spans."""

import pytest

from tokensift.errors import InputError, InvalidJSONError, ParameterError
from tokensift.text.units import Protect, blocks, group_units, segment, strip_markers


def kinds(text, **protect):
    seg = segment([text], Protect(**protect))
    return [(u.text, u.kind) for u in seg.units]


def test_units_concatenate_back_to_the_text():
    text = "Hello  world,\n  this is `code` and https://x.org/a?b=1 in 2024.\n\n```py\nx = 1\n```\ntail "
    seg = segment([text], Protect())
    assert "".join(u.text for u in seg.units) == text
    assert all(seg.parts[0][u.start : u.end] == u.text for u in seg.units)


def test_words_carry_their_leading_space_and_line_breaks_are_layout():
    assert kinds("a cat\n  sat") == [("a", "word"), (" cat", "word"), ("\n  ", "layout"), ("sat", "word")]


def test_protected_spans_widen_to_whole_words():
    found = kinds("see (https://x.org/a). then `f(x)`, ok 12%")
    assert ("see", "word") in found
    assert (" (https://x.org/a).", "protected") in found
    assert (" `f(x)`,", "protected") in found
    assert (" 12%", "word") in found
    assert (" 12%", "protected") in kinds("ok 12%", numbers=True)


def test_fenced_code_block_is_one_protected_unit():
    text = "intro words\n```python\ndef f(x):\n    return x  # keep\n```\nafter"
    protected = [u for u, k in kinds(text) if k == "protected"]
    assert protected == ["```python\ndef f(x):\n    return x  # keep\n```"]


def test_keep_markers_are_removed_and_their_region_protected():
    text, regions = strip_markers("a <keep>b c</keep> d")
    assert text == "a b c d" and regions == [(2, 5)]
    assert kinds("a <keep>b c</keep> d") == [("a", "word"), (" b c", "protected"), (" d", "word")]


@pytest.mark.parametrize("bad", ["a <keep> b", "a </keep> b", "<keep>a <keep>b</keep></keep>"])
def test_unbalanced_markers_are_input_errors(bad):
    with pytest.raises(InputError):
        segment([bad], Protect())


def test_user_patterns_and_bad_regex():
    assert (" ID-42x", "protected") in kinds("the ID-42x here", patterns=(r"ID-\w+",))
    with pytest.raises(InputError, match="not a valid regex"):
        segment(["x"], Protect(patterns=("(",)))


def test_markdown_table_keeps_header_rule_and_pipes():
    text = "| name | role |\n|---|---|\n| alice smith | admin user |\n"
    seg = segment([text], Protect())
    droppable = [u.text.strip() for u in seg.units if u.droppable]
    assert droppable == ["alice", "smith", "admin", "user"]
    kept = "".join(u.text for u in seg.units if not u.droppable)
    assert "| name | role |" in kept and "|---|---|" in kept and kept.count("|") == 9


def test_json_keys_and_syntax_are_protected_values_droppable():
    text = '{"title": "a very long title", "n": 3, "tags": ["red fox", "x"]}'
    seg = segment([text], Protect())
    assert seg.json_parts == [True]
    assert [u.text for u in seg.units if u.droppable] == ["a", " very", " long", " title", "red", " fox", "x"]
    with pytest.raises(InvalidJSONError, match="not valid JSON"):
        segment(["{not json"], Protect(json=True))
    assert segment(["{not json"], Protect()).json_parts == [False]


def test_groups_words_phrases_sentences_and_blocks():
    seg = segment(["The big dog sat on the mat. It ran to the house!\n\nNext part here."], Protect())
    assert len(group_units(seg, "word")) == sum(u.droppable for u in seg.units)
    phrases = [" ".join(seg.units[i].text.strip() for i in g) for g in group_units(seg, "phrase")]
    assert phrases[:3] == ["The big dog sat", "on the mat.", "It ran"]
    sentences = group_units(seg, "sentence")
    assert len(sentences) == 3
    assert len(blocks(seg)) == 2
    assert len(blocks(segment(["a", "b", "c"], Protect()))) == 3


def bonded(text, units="word"):
    seg = segment([text], Protect(), units)
    return ["".join(seg.units[i].text for i in bond).strip() for bond in seg.bonds]


def test_dates_numbers_names_and_quotations_are_bonded_whole():
    text = (
        "Charles Darwin was born on 12 February 1809 in Shrewsbury. On June 4, 2003, the University of "
        'Cambridge said "the origin is here" and paid $3.5 million to Dr. J. Smith of New York City. '
        "In 2003 Apollo 11 flew; it was May 2003. He met Mr. Bean in Paris, France."
    )
    assert bonded(text) == [
        "Charles Darwin",
        "12 February 1809",
        "June 4, 2003,",
        "University of Cambridge",
        '"the origin is here"',
        "$3.5 million",
        "Dr. J. Smith of New York City.",
        "Apollo 11",
        "May 2003.",
        "Mr. Bean",
    ]


def test_bonds_stop_at_sentence_starts_punctuation_and_kept_units():
    assert bonded("When Paris fell. However, London stood.") == []
    assert bonded("the year 1999, then Rome") == []
    assert bonded("in New `York` City") == []  # inline code is a kept unit between the two words


def test_phrase_and_sentence_units_are_bonds_on_request():
    text = "the old man walked to the river. He sat down."
    assert bonded(text, "sentence") == ["the old man walked to the river.", "He sat down."]
    assert "the old man walked" in bonded(text, "phrase")
    with pytest.raises(ParameterError, match="units must be word, phrase or sentence"):
        segment([text], Protect(), "token")  # type: ignore[arg-type]
