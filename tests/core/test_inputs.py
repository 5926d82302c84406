import io
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokensift.errors import EmptyInputError, InputEncodingError, InputFileError
from tokensift.inputs import data_dir, read_text


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


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSIFT_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("TOKENSIFT_DATA", str(tmp_path / "nope"))
    with pytest.raises(InputFileError, match="not a directory"):
        data_dir()
    with pytest.raises(InputFileError, match="data directory not found"):
        data_dir(tmp_path / "nope")
