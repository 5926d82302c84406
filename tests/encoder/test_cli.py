"""``tokensift embed`` / ``merges`` / ``bench encoder``: bad input gets one line and exit 2; real runs work."""

import json

import numpy as np
import pytest

from tests.core.test_cli import cli

LONG = "word " * 400


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder-cli")
    (folder / "gap.txt").write_text("first line\n\nthird line\n")
    (folder / "ok.txt").write_text("The cat sat on the mat.\nA dog ran to the big red house.\n")
    (folder / "long.txt").write_text(LONG + "\nshort\n")
    (folder / "empty.txt").write_text("\n \n")
    return folder


@pytest.mark.parametrize(
    "args,message",
    [
        (["embed", "{d}/gap.txt"], "error: line 2 is empty; remove empty lines or pass --skip-empty"),
        (["embed", "{d}/empty.txt"], "error: '{d}/empty.txt' is empty: there is no text to work on"),
        (["embed", "{d}/ok.txt", "--out", "{d}"], "error: --out {d} must be a .npy file name"),
        (
            ["embed", "{d}/ok.txt", "--layers", "1,x"],
            "error: --layers expects a comma-separated list of int, got '1,x'",
        ),
        (["merges", "{d}/missing.txt"], "error: file not found: {d}/missing.txt"),
        (["bench", "encoder", "--ratios", "0.5,1.2"], "error: ratio must be in [0, 1), got 1.2"),
        (["embed", "{d}/ok.txt", "--ratio", "1.5"], "error: ratio must be in [0, 1), got 1.5"),
        (
            ["embed", "{d}/ok.txt", "--r", "-2"],
            "error: r (tokens removed per layer) must be a whole number >= 0, got -2",
        ),
        (
            ["embed", "{d}/ok.txt", "--ratio", "0.5", "--keep", "0.5"],
            "error: give exactly one of ratio, keep, keep_tokens, r and per_layer (got ratio, keep)",
        ),
    ],
)
def test_bad_input_before_loading_a_model(files, args, message):
    result = cli(*[a.format(d=files) for a in args])
    assert result.returncode == 2
    assert result.stderr.decode().strip() == message.format(d=files)


@pytest.mark.model
@pytest.mark.parametrize(
    "args,message",
    [
        (["embed", "{d}/ok.txt", "--method", "nope"], "error: unknown encoder method 'nope'; known: divprune, evit,"),
        (
            ["embed", "{d}/ok.txt", "--layers", "9", "--ratio", "0.5"],
            "error: reduction layers must be in 0..5, got [9]",
        ),
        (
            ["embed", "{d}/long.txt"],
            "error: text 1 has 402 tokens, more than the 256 the model takes (1 text(s) too long);",
        ),
        (["merges", "{d}/long.txt"], "error: the text has 403 tokens, more than the 256 the model takes;"),
    ],
)
def test_bad_input_with_the_model(files, args, message):
    result = cli(*[a.format(d=files) for a in args])
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines[-1].startswith(message.format(d=files)), lines


@pytest.mark.model
def test_embed_json_npy_and_truncate(files, tmp_path):
    result = cli("embed", str(files / "ok.txt"), "--method", "tome", "--ratio", "0.3", "--json")
    assert result.returncode == 0, result.stderr.decode()
    records = json.loads(result.stdout)
    assert [r["line"] for r in records] == [1, 2]
    assert all(len(r["embedding"]) == 384 and r["kept_tokens"] < r["tokens"] for r in records)
    out = tmp_path / "e.npy"
    result = cli("embed", str(files / "long.txt"), "--truncate", "--out", str(out))
    assert result.returncode == 0, result.stderr.decode()
    vectors = np.load(out)
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert "1 truncated" in result.stderr.decode()


@pytest.mark.model
def test_merges_json_and_html(files, tmp_path):
    page = tmp_path / "m.html"
    result = cli("merges", str(files / "ok.txt"), "--method", "tome", "--ratio", "0.5", "--json", "--html", str(page))
    assert result.returncode == 0, result.stderr.decode()
    view = json.loads(result.stdout)
    assert view["input_tokens"] == 18 and view["output_tokens"] == 9  # [CLS] + 16 words/marks + [SEP]
    members = sorted(i for g in view["groups"] for i in g["members"])
    assert members == list(range(18))  # merging keeps every token in exactly one group
    assert "<h2>Merged groups</h2>" in page.read_text()
