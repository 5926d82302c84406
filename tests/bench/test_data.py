"""One data-dir policy and one loader per file, for every benchmark."""

import gzip
import json

import pytest

from tokensift.bench import data as files
from tokensift.errors import InputFileError


def test_data_dir_precedence_and_the_error_names_the_option_and_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSIFT_DATA", str(tmp_path))
    assert files.find_data_dir() == tmp_path
    assert files.find_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("TOKENSIFT_DATA", str(tmp_path / "nope"))
    with pytest.raises(InputFileError, match="not a directory"):
        files.find_data_dir()
    with pytest.raises(InputFileError, match=r"--data-dir .*nope is not a directory"):
        files.find_data_dir(tmp_path / "nope")
    monkeypatch.delenv("TOKENSIFT_DATA")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files, "__file__", str(tmp_path / "a" / "b" / "c" / "data.py"))
    assert files.find_data_dir() is None
    with pytest.raises(InputFileError, match=r"no evaluation data found: pass --data-dir DIR or set \$TOKENSIFT_DATA"):
        files.require_data_dir()


def test_loaders_read_the_files_and_name_a_missing_one(tmp_path):
    folder = tmp_path / "lost_in_the_middle"
    folder.mkdir()
    record = {"question": "q", "answers": ["a"], "ctxs": [{"title": "t", "text": "x", "isgold": True}]}
    (folder / "nq-open-oracle.jsonl.gz").write_bytes(gzip.compress((json.dumps(record) + "\n\n").encode()))
    assert files.nq_open(tmp_path) == [record]
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "1+1", "answer": "#### 2"}) + "\n")
    assert files.gsm8k(tmp_path)[0]["answer"] == "#### 2"
    (tmp_path / "pg_essays").mkdir()
    (tmp_path / "pg_essays" / "b.txt").write_text("second")
    (tmp_path / "pg_essays" / "a.txt").write_text("first")
    assert files.essays(tmp_path) == ["first", "second"]
    for loader in (files.wikitext, files.kv_retrieval, files.gsm8k_cot_prompt):
        with pytest.raises(InputFileError, match="is missing: pass --data-dir DIR or set \\$TOKENSIFT_DATA"):
            loader(tmp_path)
