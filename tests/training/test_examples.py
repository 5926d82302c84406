"""Reading instruction data: the four row shapes, bad lines named by number, response ids that do not depend
on what precedes them."""

import json

import pytest

from tests.conftest import word_level_tokenizer
from tokensift.errors import BadRowError, InputFileError
from tokensift.training.examples import encode_example, encode_unconditional, load_examples, parse_row, read_lines


@pytest.mark.parametrize(
    ("row", "messages", "response"),
    [
        ({"instruction": "Add.", "input": "1 and 2", "output": "3"}, (("user", "Add.\n\n1 and 2"),), "3"),
        ({"instruction": "Add.", "input": "", "output": "3"}, (("user", "Add."),), "3"),
        ({"prompt": "p", "response": "r"}, (("user", "p"),), "r"),
        ({"question": "q", "answer": "a #### 4"}, (("user", "q"),), "a #### 4"),
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            (("system", "s"), ("user", "u")),
            "a",
        ),
    ],
)
def test_every_row_shape_becomes_messages_and_a_response(row, messages, response):
    example = parse_row(row, 1)
    assert example.messages == messages and example.response == response


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([1, 2], "expected a JSON object"),
        ({"text": "x"}, "no known fields"),
        ({"prompt": "p", "response": ""}, "'response' is empty"),
        ({"question": 3, "answer": "a"}, "'question' must be a string"),
        ({"messages": [{"role": "user", "content": "u"}]}, "at least two"),
        ({"messages": [{"role": "user", "content": "u"}, {"role": "user", "content": "v"}]}, "assistant"),
        ({"messages": [{"role": "robot", "content": "u"}, {"role": "assistant", "content": "v"}]}, "role 'robot'"),
    ],
)
def test_bad_rows_say_what_is_wrong_and_where(row, message):
    with pytest.raises(BadRowError, match=f"line 7: .*{message}"):
        parse_row(row, 7)


def test_read_lines_streams_and_reports_bad_lines_without_stopping(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"prompt": "a", "response": "b"})
        + "\n\n{not json\n"
        + json.dumps({"x": 1})
        + "\n"
        + json.dumps({"question": "q", "answer": "r"})
    )
    lines = list(read_lines(path))
    assert [line.number for line in lines] == [1, 3, 4, 5]
    assert [line.error is None for line in lines] == [True, False, False, True]
    assert "line 3: not valid JSON" in str(lines[1].error)
    with pytest.raises(BadRowError, match="line 3"):
        load_examples(path)
    with pytest.raises(InputFileError):
        list(read_lines(tmp_path / "missing.jsonl"))


def test_response_ids_are_the_same_with_and_without_the_instruction():
    tokenizer = word_level_tokenizer()
    example = parse_row({"prompt": "the cat sat on the mat", "response": "the dog ran to the house ."}, 1)
    conditional, alone = encode_example(tokenizer, example), encode_unconditional(tokenizer, example)
    assert conditional.response == alone.response
    assert tokenizer.decode(conditional.response) == "the dog ran to the house ."
    assert tokenizer.decode(conditional.prompt) == "the cat sat on the mat"
    assert alone.prompt == [tokenizer.bos_token_id]
