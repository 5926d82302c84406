"""``tokensift compress`` end to end on a tiny local model folder: stdout, stats, JSON, HTML, bad input."""

import json
import sys

import pytest

from tests.conftest import tiny_llama
from tests.text.helpers import sentence_text
from tokensift.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, request):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import WORDS

    folder = tmp_path_factory.mktemp("tiny-model")
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>")
    tiny_llama().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run(monkeypatch, capsys, *args, stdin=None):
    monkeypatch.setattr(sys, "argv", ["tokensift", *map(str, args)])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", type("In", (), {"buffer": __import__("io").BytesIO(stdin)})())
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_compress_prints_text_and_stats(monkeypatch, capsys, tmp_path, model_dir):
    source = tmp_path / "p.txt"
    source.write_text(sentence_text(120, 4))
    page = tmp_path / "view.html"
    code, out, err = run(
        monkeypatch,
        capsys,
        "compress",
        source,
        "--rate",
        "0.5",
        "--method",
        "surprisal",
        "-m",
        model_dir,
        "--html",
        page,
    )
    assert code == 0 and out.strip()
    assert "surprisal:" in err and "kept 0.5" in err
    html = page.read_text()
    assert 'class="d"' in html and 'class="k"' in html


def test_compress_json_and_stdin_chat(monkeypatch, capsys, model_dir):
    chat = [{"role": "user", "content": sentence_text(50, 1)}, {"role": "assistant", "content": sentence_text(50, 2)}]
    code, out, _ = run(
        monkeypatch,
        capsys,
        "compress",
        "-",
        "--keep-tokens",
        "40",
        "--input",
        "chat",
        "--method",
        "random",
        "-m",
        model_dir,
        "--json",
        stdin=json.dumps(chat).encode(),
    )
    result = json.loads(out)
    assert code == 0 and result["tokens_after"] <= 40
    assert [m["role"] for m in result["compressed"]] == ["user", "assistant"]


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        (["--rate", "1.5"], b"the cat", "error: rate must be in (0, 1], got 1.5"),
        (["--keep-tokens", "0"], b"the cat", "error: keep_tokens must be a whole number from 1 to"),
        (["--ratio", "1"], b"the cat", "error: ratio must be in [0, 1), got 1.0"),
        (["--ratio", "0.5", "--keep", "0.5"], b"the cat", "error: give one of ratio, keep and keep_tokens, not ratio"),
        ([], b"the cat", "error: give a budget: one of ratio, keep (or rate) and keep_tokens"),
        (["--rate", "0.5"], b"  \n", "error: standard input is empty: there is no text to work on"),
        (["--rate", "0.5"], b"caf\xe9", "error: standard input is not valid UTF-8"),
        (["--rate", "0.5", "--json-mode"], b"{oops", "error: input is not valid JSON"),
        (["--rate", "0.5", "--method", "zip"], b"the cat", "error: unknown text method 'zip'"),
        (["--keep-tokens", "2"], b"<keep>one two three</keep> cat", "error: protected spans alone need 3 tokens"),
        (["--rate", "0.5", "--input", "chat"], b'{"a": 1}', "error: --input chat expects a JSON list, got dict"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, model_dir, args, stdin, message):
    code, out, err = run(
        monkeypatch, capsys, "compress", "-", "-m", model_dir, "--method", "random", *args, stdin=stdin
    )
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1, err


def test_target_above_input_is_returned_unchanged_with_a_note(monkeypatch, capsys, model_dir):
    code, out, err = run(
        monkeypatch, capsys, "compress", "-", "-m", model_dir, "--keep-tokens", "500", stdin=b"the cat sat"
    )
    assert code == 0 and out == "the cat sat\n" and "returned unchanged" in err


def test_compress_coarse_to_fine_in_sentence_units(monkeypatch, capsys, tmp_path, model_dir):
    source = tmp_path / "p.txt"
    source.write_text("the cat sat on the mat. a dog ran to the house. one two three four five six.")
    args = ["compress", source, "--keep", "0.5", "--method", "coarse:random", "-m", model_dir, "--json"]
    code, out, err = run(monkeypatch, capsys, *args, "--units", "sentence")
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == "coarse:random" and result["tokens_after"] <= result["keep_tokens"]
    kept = "".join(u["text"] for u in result["units"] if u["kept"]).strip()
    assert kept in {"the cat sat on the mat.", "a dog ran to the house.", "one two three four five six."}
    code, out, err = run(monkeypatch, capsys, *args, "--units", "token")
    assert code != 0 and "units must be word, phrase or sentence" in err and "Traceback" not in err
