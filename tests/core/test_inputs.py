import io
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokensift.errors import EmptyInputError, InputEncodingError, InputFileError, ParameterError
from tokensift.inputs import parse_list, parse_options, read_text


def test_reads_utf8_and_keeps_line_ends(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffhé\r\nllo".encode())
    assert read_text(path) == "hé\r\nllo"


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda p: p / "missing.txt", InputFileError, "file not found"),
        (lambda p: p, InputFileError, "is a directory"),
        (lambda p: (p / "e.txt", (p / "e.txt").write_text(" \n\t"))[0], EmptyInputError, "is empty"),
        (
            lambda p: (p / "b.bin", (p / "b.bin").write_bytes(b"ok\xff\xfe"))[0],
            InputEncodingError,
            "byte 0xff at offset 2",
        ),
    ],
)
def test_bad_files_raise_typed_errors(tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        read_text(make(tmp_path))


def test_reads_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    assert read_text("-") == "from stdin"


@given(st.binary(max_size=64))
def test_any_bytes_give_text_or_a_typed_error(raw):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x"
        path.write_bytes(raw)
        try:
            text = read_text(path)
        except (InputEncodingError, EmptyInputError):
            return
        assert text.strip() and text.encode("utf-8") in (raw, raw[3:])


def test_lists_and_options_parse_or_name_the_option():
    assert parse_list("a, b,,c", option="methods") == ("a", "b", "c")
    assert parse_list("0.5,0.75", float, option="ratios") == (0.5, 0.75)
    assert parse_list(None, option="methods") is None
    with pytest.raises(ParameterError, match="--ratios expects a comma-separated list of float") as info:
        parse_list("0.5,x", float, option="ratios")
    assert info.value.option == "ratios"
    with pytest.raises(ParameterError, match="--tasks is empty"):
        parse_list(" , ", option="tasks")
    assert parse_options(["window=4", "reorder=true", "granularity=phrase", "a.b=[1]"]) == {
        "window": 4,
        "reorder": True,
        "granularity": "phrase",
        "a.b": [1],
    }
    with pytest.raises(ParameterError, match="key=value"):
        parse_options(["window"])
