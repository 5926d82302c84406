"""Bad and edge input, generated: every CLI command and the public functions.

The contract: no untyped exception from a public function (only :class:`TokensiftError`), and on the CLI no
traceback, a non-zero exit with one line on stderr that names the option that was wrong. Inputs come from
hypothesis (fixed seed, no example database, so every run sees the same inputs); each test asserts how
many it ran, and the session prints the total (``fuzz: N generated inputs``).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import WORDS, tiny_llama, word_level_tokenizer
from tokensift.cli import main
from tokensift.errors import TokensiftError
from tokensift.methods import names

BUSY: list[socket.socket] = []
COUNTS: Counter[str] = Counter()
"""Generated inputs per fuzz test (printed at the end of the session by conftest)."""


def fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings shared by the fuzz tests: deterministic, no database, no deadline."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- files and tiny models on disk -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("fuzz")
    sentence = " ".join(WORDS[2:30])
    files = {
        "ok": sentence,
        "lines": f"{sentence}\nthe red cat sat .\n",
        "gaps": f"{sentence}\n\n  \nthe dog\n",
        "empty": "",
        "blank": " \n\t \n",
        "long": " ".join(WORDS[2:40] * 12),  # over the tiny models' 128 positions
        "emoji": "🙂 the cat 🙂 sat ¿ on ∑ the mat",
        "punct": "... ,,, !!! ???",
        "json": json.dumps([{"role": "user", "content": sentence}]),
        "badjson": "[{oops",
        "docs": json.dumps([sentence, "the dog ran"]),
        "rows": "\n".join(
            json.dumps({"prompt": " ".join(WORDS[2 + i : 8 + i]), "response": " ".join(WORDS[9 + i : 14 + i])})
            for i in range(5)
        ),
        "badrow": json.dumps({"prompt": "the cat"}) + "\n" + json.dumps({"prompt": "a", "response": "b"}),
    }
    paths = {}
    for key, text in files.items():
        paths[key] = root / f"{key}.txt"
        paths[key].write_text(text, encoding="utf-8")
    table = [{"text": sentence}, {"text": None}, {"text": ""}, {"other": 1}, {"text": " ".join(WORDS[2:40] * 12)}]
    table += [{"prompt": "the cat", "response": "sat on the mat ."}, {"text": "the dog ran", "prompt": 3}]
    paths["table"] = root / "table.jsonl"
    paths["table"].write_text("".join(json.dumps(row) + "\n" for row in table) + "{oops\n\n", encoding="utf-8")
    paths["rowsjsonl"] = root / "rows.jsonl"
    paths["rowsjsonl"].write_text(files["rows"] + "\n" + files["badrow"] + "\n", encoding="utf-8")
    paths["parquet"] = root / "table.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [sentence, None, "the red cat sat ."], "n": [1, 2, 3]}), paths["parquet"])
    (root / "b").mkdir()
    paths["bytes"] = root / "bytes.txt"
    paths["bytes"].write_bytes(b"caf\xe9 \xff\xfe the cat")
    paths["missing"] = root / "missing.txt"
    paths["folder"] = root
    paths["nodata"] = root / "no-data"
    paths["emptydata"] = root / "empty-data"
    paths["emptydata"].mkdir()
    from PIL import Image

    paths["png"] = root / "image.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(paths["png"])
    paths["cutpng"] = root / "cut.png"
    paths["cutpng"].write_bytes(paths["png"].read_bytes()[:60])
    paths["llama"] = root / "tiny-llama"
    tiny_llama(context=128).save_pretrained(paths["llama"])
    word_level_tokenizer().save_pretrained(paths["llama"])
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    BUSY.append(busy)  # held for the module: `serve` on this port must fail before serving
    paths["busy"] = Path(str(busy.getsockname()[1]))
    paths["bert"] = root / "tiny-bert"
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS[2:]]), encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).eval().save_pretrained(paths["bert"])
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(paths["bert"])
    return paths


def run_cli(argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """``tokensift ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    old_argv, old_stdin = sys.argv, sys.stdin
    sys.argv, sys.stdin = ["tokensift", *argv], io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv, sys.stdin = old_argv, old_stdin
    return int(code or 0), out.getvalue(), err.getvalue()


def check_cli(argv: list[str], names_of_bad: tuple[str, ...], stdin: bytes = b"") -> None:
    """The CLI contract for one input; ``names_of_bad`` are the options that may be blamed (empty: input is fine
    or the problem is the input itself, which the message must then describe)."""
    code, out, err = run_cli(argv, stdin)
    assert "Traceback" not in out + err, (argv, err)
    assert "internal error" not in err, (argv, err)
    if code == 0:
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), (argv, err)
    assert sum("error" in line.lower() for line in lines) == 1, (argv, err)  # the error is one line
    assert all(line.startswith("loaded ") for line in lines[:-1]), (argv, err)  # before it at most "loaded <model>"
    if names_of_bad:
        message = lines[-1].lower().replace("-", "_")
        assert any(name.replace("-", "_") in message for name in names_of_bad), (argv, err, names_of_bad)


# -- generated pieces ------------------------------------------------------------------------------------------
FRACTIONS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "-0.5", "0", "1", "1.5", "abc", "", "0.5.5", "1e-300", "--"]),
)
COUNTS_TEXT = st.one_of(
    st.integers(-(10**6), 10**9).map(str), st.sampled_from(["0", "-1", "x", "", "1.5", "99999999999999999999"])
)
OPTIONS = st.one_of(
    st.sampled_from(["window=abc", "window=-3", "window=0", "kernel=2.5", "nope=1", "=3", "window", "seed=1e99"]),
    st.tuples(
        st.sampled_from(["window", "chunk", "beta", "safeguard", "granularity", "seed", "r"]), st.text(max_size=6)
    ).map(lambda kv: f"{kv[0]}={kv[1]}"),
)


def method_names(target: str) -> st.SearchStrategy[str]:
    known = names(target)
    bogus = ["nope", "", ":", "snapkv:knorm", "adakv:", "adakv:adakv:", "RANDOM", "tome:tome", "random:random"]
    return st.one_of(st.sampled_from(known), st.sampled_from(bogus), st.text(max_size=8))


def budget_flags() -> st.SearchStrategy[tuple[list[str], tuple[str, ...]]]:
    """One or two budget flags with generated values, and the option names an error may blame."""
    one = st.one_of(
        FRACTIONS.map(lambda v: (["--ratio", v], ("ratio",))),
        FRACTIONS.map(lambda v: (["--keep", v], ("keep",))),
        COUNTS_TEXT.map(lambda v: (["--keep-tokens", v], ("keep_tokens", "budget"))),
    )
    two = st.tuples(one, one).map(lambda p: (p[0][0] + p[1][0], p[0][1] + p[1][1]))
    return st.one_of(one, two, st.just(([], ("ratio", "keep"))))  # none given: an error may ask for one


INPUT_PROBLEMS = {
    "gaps": ("empty",),
    "empty": ("empty",),
    "blank": ("empty",),
    "long": ("positions", "more than the", "tokens"),
    "bytes": ("utf_8",),
    "missing": ("not found",),
    "folder": ("directory",),
    "json": ("json",),
    "punct": ("empty", "no text", "units"),
}
"""What an error caused by each input file (rather than by an option) must say."""
FILES = ["ok", "lines", "emoji", *INPUT_PROBLEMS]


@st.composite
def inspect_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    argv = ["inspect", f"{{{draw(st.sampled_from(FILES))}}}", "--model", "{llama}"]
    blame: tuple[str, ...] = ()
    for flag, values in [("--quantile", FRACTIONS), ("--zscore", FRACTIONS), ("--max-tokens", COUNTS_TEXT)]:
        if draw(st.booleans()):
            argv += [flag, draw(values)]
            blame += (flag[2:],)
    if draw(st.booleans()):
        argv += ["--window", draw(COUNTS_TEXT), "--stride", draw(COUNTS_TEXT)]
        blame += ("window", "stride")
    return argv, blame


@st.composite
def compress_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    budget, blame = draw(budget_flags())
    argv = ["compress", f"{{{draw(st.sampled_from(FILES))}}}", "--model", "{llama}", *budget]
    argv += ["--method", draw(method_names("text"))]
    blame += ("method",)
    if draw(st.booleans()):
        argv += ["--option", draw(OPTIONS)]
        blame += ("option", "window", "chunk", "beta", "safeguard", "granularity", "seed", "r")
    if draw(st.booleans()):
        argv += ["--input", draw(st.sampled_from(["text", "documents", "chat", "xml"]))]
        blame += ("input", "json")
    if draw(st.booleans()):
        argv += ["--turn-decay", draw(FRACTIONS)]
        blame += ("turn_decay",)
    if draw(st.booleans()):
        argv += ["--question", draw(st.text(max_size=12))]
    if draw(st.booleans()):
        argv += ["--rate", draw(FRACTIONS)]
        blame += ("rate",)
    return argv, blame


@st.composite
def encoder_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    command = draw(st.sampled_from(["embed", "merges"]))
    budget, blame = draw(budget_flags())
    argv = [command, f"{{{draw(st.sampled_from(FILES))}}}", "--model", "{bert}", *budget]
    argv += ["--method", draw(method_names("encoder"))]
    blame += ("method",)
    if draw(st.booleans()):
        argv += ["--r", draw(COUNTS_TEXT)]
        blame += ("r",)
    if draw(st.booleans()):
        argv += ["--layers", draw(st.sampled_from(["0", "1,0", "9", "-1", "x", "", "0,,1"]))]
        blame += ("layers",)
    if draw(st.booleans()):
        argv += ["--option", draw(OPTIONS)]
        blame += ("option", "window", "chunk", "beta", "safeguard", "granularity", "seed", "r")
    if command == "embed" and draw(st.booleans()):
        argv += ["--batch-size", draw(COUNTS_TEXT)]
        blame += ("batch_size",)
    if draw(st.booleans()):
        argv += ["--truncate"]
    return argv, blame


@st.composite
def kv_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    budget, blame = draw(budget_flags())
    question = draw(st.sampled_from(["what is the cat ?", "", "   ", "🙂"]))
    argv = ["kv", "generate", "--context", f"{{{draw(st.sampled_from(FILES))}}}", "-q", question]
    argv += ["--model", draw(st.sampled_from(["{llama}", "{llama}", "{bert}", "nope-model"])), *budget]
    argv += ["--method", draw(method_names("kv")), "--max-new-tokens", draw(st.sampled_from(["2", "0", "-1", "x"]))]
    blame += ("method", "question", "max_new_tokens", "model")
    if draw(st.booleans()):
        argv += ["--option", draw(OPTIONS)]
        blame += ("option", "window", "chunk", "beta", "safeguard", "seed", "kernel")
    return argv, blame


@st.composite
def bench_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    target = draw(st.sampled_from(["kv", "text", "encoder"]))
    model = "{bert}" if target == "encoder" else "{llama}"
    argv = ["bench", target, "--out", "{folder}/bench-out", "--model", model]
    argv += ["--data-dir", draw(st.sampled_from(["{nodata}", "{emptydata}", "{ok}"]))]
    blame: tuple[str, ...] = ("data_dir", "data")
    for flag, values in [
        ("--ratios", st.one_of(FRACTIONS, st.sampled_from(["0.5,x", ",", "0.5,,0.75", "0.5,1"]))),
        ("--methods", st.one_of(method_names(target), st.sampled_from(["adakv:kvzip,nope", ",", "tome,"]))),
        ("--tasks", st.sampled_from(["niah", "nq_qa", "mmlu", "", "speed,,", "rate_adherence"])),
        ("--samples", COUNTS_TEXT),
        ("--peers", st.sampled_from(["llmlingua", "kvpress", ""])),
    ]:
        if draw(st.booleans()):
            argv += [flag, draw(values)]
            blame += (flag[2:].rstrip("s"), flag[2:])
    if target == "kv" and draw(st.booleans()):
        argv += ["--modes", draw(st.sampled_from(["query-aware", "both", "", "query-agnostic,x"]))]
        blame += ("modes",)
    if target == "kv" and draw(st.booleans()):
        argv += ["--length", draw(COUNTS_TEXT)]
        blame += ("length",)
    return argv, blame


@st.composite
def other_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    return draw(
        st.one_of(
            st.tuples(
                st.just("methods"),
                st.sampled_from(["--target", "--json", "--markdown"]),
                st.sampled_from(["kv", "audio", "", "text"]),
            ).map(lambda t: (list(t), ("target", "argument"))),
            st.sampled_from(
                [
                    (["models", "--json"], ()),
                    (["demo", "--model", "nope-model"], ("model",)),
                    (["demo", "--data-dir", "{nodata}", "--model", "nope"], ("data_dir", "model")),
                    (["nope-command"], ("command",)),
                    (["inspect"], ("file",)),
                    (["kv"], ()),
                    (["bench"], ()),
                    (["compress", "{ok}", "--ratio", "0.5", "--html", "{folder}"], ("html",)),
                    (["embed", "{ok}", "--out", "{folder}"], ("out",)),
                    (["embed", "{ok}", "--out", "{folder}/x.txt"], ("out",)),
                    (["inspect", "{ok}", "--html", "{folder}", "--model", "{llama}"], ("html",)),
                    (["inspect", "caf\udce9.txt"], ("utf_8",)),
                    (["compress", "{ok}", "--question", "\udcff", "--ratio", "0.5"], ("utf_8",)),
                ]
            ),
        )
    )


IMAGES = ["png", "cutpng", "ok", "missing", "folder", "empty"]
"""``tokensift vision``'s image argument: a good image, a truncated one, text files, a missing file, a folder."""
IMAGE_PROBLEMS = {"cutpng": ("damaged", "truncated"), "ok": ("not an image",), "empty": ("not an image",)}
IMAGE_PROBLEMS |= {"missing": ("does not exist",), "folder": ("not a file",)}


@st.composite
def vision_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    """``tokensift vision``: never a real VLM (a text model folder or an unknown name), so every case is refused."""
    image = draw(st.sampled_from(IMAGES))
    argv = ["vision", f"{{{image}}}", "--question", draw(st.sampled_from(["what shape?", "", " ", "is it red?"]))]
    argv += ["--model", draw(st.sampled_from(["{llama}", "nope-vlm"]))]
    blame: tuple[str, ...] = ("question", "model", *IMAGE_PROBLEMS.get(image, ()))
    if draw(st.booleans()):
        argv += ["--method", draw(method_names("vision"))]
        blame += ("method", "option")
    for flag, values in [("--keep", FRACTIONS), ("--keep-tokens", COUNTS_TEXT), ("--option", OPTIONS)]:
        if draw(st.booleans()):
            argv += [flag, draw(values)]
            blame += (flag[2:], "method", "keep")
    if draw(st.booleans()):
        argv += ["--html", draw(st.sampled_from(["{folder}", "{folder}/view.html"]))]
        blame += ("html",)
    if draw(st.booleans()):
        argv += ["--max-new-tokens", draw(COUNTS_TEXT)]
        blame += ("max_new_tokens",)
    return argv, blame


@st.composite
def serve_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    """``serve`` with generated flags; the port is one the fixture holds, so a fully valid command stops at
    binding it (nothing is served)."""
    argv = ["serve", "--port", draw(st.sampled_from(["{busy}", "{busy}", "{busy}", "x", "0", "70000", "-1"]))]
    blame: tuple[str, ...] = ("port", "listen")
    for flag, values in [
        ("--memory", st.sampled_from(["1GiB", "512MiB", "abc", "0", "-1GiB", "1TB", "", "1.5e3kb"])),
        ("--max-batch", COUNTS_TEXT),
        ("--max-queue", COUNTS_TEXT),
        ("--max-tokens", COUNTS_TEXT),
        ("--temperature", FRACTIONS),
        ("--kv-method", method_names("kv")),
        ("--kv-ratio", FRACTIONS),
        ("--prompt-method", method_names("text")),
        ("--prompt-rate", FRACTIONS),
        ("--model", st.sampled_from(["{llama}", "nope-model", "{bert}"])),
        ("--host", st.sampled_from(["127.0.0.1", "256.1.1.1", "localhost"])),
        ("--ray-replicas", st.sampled_from(["0", "-1", "x", "2", "1.5"])),
        ("--cpus-per-replica", st.sampled_from(["1", "0", "-2", "x"])),
    ]:
        if draw(st.booleans()):
            argv += [flag, draw(values)]
            blame += (flag[2:], flag[2:].replace("-", "_"))
    blame += ("kv_method", "method", "budget", "ratio", "keep", "rate", "model", "host", "address")
    return argv, blame


TRAINING_FILES = ["rows", "rows", "badrow", *FILES]


@st.composite
def training_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    """``score-data`` and ``train`` on JSONL rows, bad rows and every problem file, with generated flags."""
    file = draw(st.sampled_from(TRAINING_FILES))
    blame: tuple[str, ...] = ("line",) if file not in ("rows", "empty", "blank", "bytes", "missing", "folder") else ()
    small = st.sampled_from(["0", "-1", "x", "", "1.5", "1", "2", "99999999999999999999"])
    if draw(st.booleans()):
        argv = ["score-data", f"{{{file}}}", "--model", "{llama}"]
        flags = [
            ("--method", method_names("training")),
            ("--keep", FRACTIONS),
            ("--keep-rows", COUNTS_TEXT),
            ("--batch-size", small),
            ("--max-tokens", COUNTS_TEXT),
            ("--top", small),
            ("--out", st.sampled_from(["{folder}/kept.jsonl", "{folder}", "{rows}"])),
            ("--option", OPTIONS),
        ]
    else:
        argv = ["train", f"{{{file}}}", "--model", "{llama}", "--steps", draw(small)]
        blame += ("steps",)
        flags = [
            ("--policy", method_names("training")),
            ("--keep", FRACTIONS),
            ("--ratio", FRACTIONS),
            ("--batch-size", small),
            ("--lr", FRACTIONS),
            ("--backward", st.sampled_from(["exact", "sparse", "half", ""])),
            ("--max-tokens", COUNTS_TEXT),
            ("--eval", st.sampled_from(["{rows}", "{badrow}", "{missing}", "{empty}"])),
            ("--option", OPTIONS),
        ]
    for flag, values in flags:
        if draw(st.booleans()):
            value = draw(values)
            argv += [flag, value]
            blame += (flag[2:], flag[2:].replace("-", "_"), "budget", "option")
            if flag == "--eval":
                blame += ("line", "empty", "not found")
            if flag == "--option" or flag == "--method" or flag == "--policy":
                blame += ("method", "policy", "scorer", "reference", value.partition("=")[0] or "=")
            if flag == "--out" and "rows" in value:
                blame += ("input",)
    return argv, blame


BATCH_FILES = ["table", "table", "rowsjsonl", "parquet", "missing", "folder", "ok", "bytes"]
BATCH_COMMANDS = {
    "inspect": [("--quantile", FRACTIONS), ("--zscore", FRACTIONS)],
    "embed": [("--method", method_names("encoder")), ("--ratio", FRACTIONS), ("--keep", FRACTIONS)],
    "compress": [("--method", method_names("text")), ("--ratio", FRACTIONS), ("--keep-tokens", COUNTS_TEXT)],
    "score-data": [("--method", method_names("training")), ("--option", OPTIONS)],
    "kv-compress": [("--method", method_names("kv")), ("--ratio", FRACTIONS), ("--option", OPTIONS)],
}


@st.composite
def batch_args(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    """``batch COMMAND INPUT OUTPUT --ray off`` over tables with bad rows, files that are not tables and bad
    outputs, with each command's own generated flags (a row's problem is never the job's failure)."""
    command = draw(st.sampled_from(sorted(BATCH_COMMANDS)))
    file = draw(st.sampled_from(BATCH_FILES))
    output = draw(st.sampled_from(["{folder}/b/out.parquet", "{folder}/b/out.jsonl", "{folder}/b/o.csv", "{folder}"]))
    model = "{bert}" if command == "embed" else "{llama}"
    argv = ["batch", command, f"{{{file}}}", output, "--model", model, "--ray", "off"]
    blame: tuple[str, ...] = ("input", "output", "directory", "not found", "restart", "parquet")
    if command == "compress":
        blame += ("ratio", "keep")  # a compression needs a budget
    small = st.sampled_from(["0", "-1", "x", "", "1", "2", "99999999999999999999"])
    flags = [
        ("--text-field", st.sampled_from(["text", "nope", "", "prompt"])),
        ("--batch-size", small),
        ("--shard-rows", small),
        ("--max-tokens", COUNTS_TEXT),
        ("--actors", small),
        ("--cpus-per-actor", small),
        *BATCH_COMMANDS[command],
    ]
    if command == "score-data":
        flags = [f for f in flags if f[0] != "--text-field"]
    if command == "kv-compress":
        argv += ["--store", "{folder}/b/store"]
    for flag, values in flags:
        if draw(st.booleans()):
            value = draw(values)
            argv += [flag, value]
            blame += (flag[2:], flag[2:].replace("-", "_"), "budget", "ratio", "keep", "option", "method")
            if flag in ("--option", "--method"):
                blame += ("scorer", "tokenizer", value.partition("=")[0] or "=")
    return argv, blame


def _fill(argv: list[str], disk: dict[str, Path]) -> list[str]:
    """Put the fixture's paths in place of ``{name}`` (generated text may hold braces of its own)."""
    filled = []
    for part in argv:
        for key, path in disk.items():
            part = part.replace(f"{{{key}}}", str(path))
        filled.append(part)
    return filled


EXAMPLES = {
    "cli inspect": 120,
    "cli compress": 260,
    "cli embed/merges": 200,
    "cli kv generate": 200,
    "cli bench": 160,
    "cli methods/models/demo/usage": 60,
    "cli serve": 80,
    "cli score-data / train": 120,
    "cli batch": 100,
    "cli vision": 100,
    "HTTP request bodies": 240,
    "build(target, name, **options)": 150,
    "kv.compress": 120,
    "kv.bounded": 60,
    "kv.compress_context / answer": 60,
    "text.compress": 150,
    "encoder.sentence_embeddings / reduce": 100,
    "one bad argument in a good call": 240,
}
"""Generated inputs per family: the README states their sum."""


@pytest.mark.parametrize(
    "family,strategy",
    [
        ("inspect", inspect_args()),
        ("compress", compress_args()),
        ("embed/merges", encoder_args()),
        ("kv generate", kv_args()),
        ("bench", bench_args()),
        ("methods/models/demo/usage", other_args()),
        ("serve", serve_args()),
        ("score-data / train", training_args()),
        ("batch", batch_args()),
        ("vision", vision_args()),
    ],
)
def test_cli_bad_input_gives_one_line_naming_the_option(disk, family, strategy):
    examples = EXAMPLES[f"cli {family}"]
    ran = []

    @fuzz(examples)
    @given(case=strategy, stdin=st.sampled_from([b"", b"the cat sat", b"\xff\xfe", b" \n"]))
    def check(case: tuple[list[str], tuple[str, ...]], stdin: bytes) -> None:
        argv, blame = case
        ran.append(argv)
        inputs = [phrase for key, phrases in INPUT_PROBLEMS.items() if f"{{{key}}}" in argv for phrase in phrases]
        if argv[0] == "batch":  # each case starts from an empty output folder (replays must see the same disk)
            shutil.rmtree(disk["folder"] / "b")
            (disk["folder"] / "b").mkdir()
        check_cli(_fill(argv, disk), (*blame, *inputs), stdin)

    check()
    assert len(ran) >= examples
    COUNTS[f"cli {family}"] += len(ran)


# -- the public functions --------------------------------------------------------------------------------------
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


def typed_only(call: Callable[[], Any]) -> None:
    """Run ``call``: it may succeed or raise a TokensiftError, nothing else."""
    with contextlib.suppress(TokensiftError):
        call()


@pytest.fixture(scope="module")
def models(disk: dict[str, Path]) -> dict[str, Any]:
    from transformers import AutoTokenizer, BertModel

    from tests.text.helpers import scorer

    tokenizer = word_level_tokenizer()
    return {
        "llama": tiny_llama(context=128),
        "tokenizer": tokenizer,
        "bert": BertModel.from_pretrained(disk["bert"]).eval(),
        "bert_tokenizer": AutoTokenizer.from_pretrained(disk["bert"]),
        "scorer": scorer(tokenizer),
    }


def explore(label: str, body: Callable[..., None], **strategies: st.SearchStrategy[Any]) -> None:
    """Run ``body`` on ``EXAMPLES[label]`` generated inputs; count them under ``label``."""
    examples = EXAMPLES[label]
    ran: list[int] = []

    @fuzz(examples)
    @given(**strategies)
    def check(**drawn: Any) -> None:
        ran.append(1)
        body(**drawn)

    check()
    assert len(ran) >= examples
    COUNTS[label] += len(ran)


def test_methods_build_raises_only_typed_errors():
    from tokensift.methods import build

    explore(
        "build(target, name, **options)",
        lambda target, spec, options: typed_only(lambda: build(target, spec, **options)),
        target=st.sampled_from(["kv", "text", "encoder", "vision", "audio", ""]),
        spec=st.one_of(method_names("kv"), method_names("text"), method_names("encoder")),
        options=st.dictionaries(
            st.sampled_from(["ratio", "keep", "keep_tokens", "window", "kernel", "chunk", "seed", "beta", "x", "a.b"]),
            VALUES,
            max_size=3,
        ),
    )


def test_kv_compress_raises_only_typed_errors(models):
    from tokensift.kv import compress

    llama, tokenizer = models["llama"], models["tokenizer"]

    def body(spec: str, budget: dict, length: int, option: dict) -> None:
        ids = torch.randint(2, 64, (1, length), generator=torch.Generator().manual_seed(length))

        def call() -> None:
            with torch.no_grad(), compress(llama, spec, tokenizer=tokenizer, **budget, **option):
                llama.generate(ids, max_new_tokens=2, do_sample=False)

        typed_only(call)
        assert llama.config._attn_implementation == "sdpa"  # restored, whatever happened

    explore(
        "kv.compress",
        body,
        spec=method_names("kv"),
        budget=st.dictionaries(st.sampled_from(["ratio", "keep", "keep_tokens"]), VALUES, max_size=2),
        length=st.sampled_from([1, 3, 20, 60, 140]),
        option=st.dictionaries(
            st.sampled_from(["window", "kernel", "chunk", "protect_first", "beta"]), VALUES, max_size=1
        ),
    )


def test_kv_bounded_raises_only_typed_errors(models):
    from tokensift.kv import bounded

    llama = models["llama"]
    ids = torch.randint(2, 64, (1, 30), generator=torch.Generator().manual_seed(0))

    def body(method: str, max_tokens: Any, every: Any) -> None:
        def call() -> None:
            with torch.no_grad(), bounded(llama, method, max_cache_tokens=max_tokens, every=every):
                llama.generate(ids, max_new_tokens=3, do_sample=False)

        typed_only(call)

    explore(
        "kv.bounded",
        body,
        method=method_names("kv"),
        max_tokens=st.one_of(st.integers(-3, 80), VALUES),
        every=st.one_of(st.integers(-1, 40), VALUES),
    )


def test_kv_context_and_answer_raise_only_typed_errors(models):
    from tokensift.kv import answer, compress_context, press_from

    llama = models["llama"]

    def body(context: Any, question: Any, new: Any) -> None:
        def call() -> None:
            compressed = compress_context(llama, context, press_from("knorm", ratio=0.5))
            answer(llama, compressed, question, max_new_tokens=new)

        typed_only(call)

    shapes = st.sampled_from([(1, 0), (1, 20), (2, 20), (1, 200), (20,), ()])
    explore(
        "kv.compress_context / answer",
        body,
        context=st.one_of(shapes.map(lambda shape: torch.ones(shape).long()), st.just(torch.ones(1, 5)), VALUES),
        question=st.sampled_from([(1, 0), (1, 3), (2, 3), (3,)]).map(lambda shape: torch.ones(shape).long()),
        new=st.one_of(st.integers(-2, 200), VALUES),
    )


PROMPTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "   ", "\x00", "the cat sat on the mat", "🙂🙂", "<keep>the cat</keep>"]),
    st.lists(st.text(max_size=10), max_size=3),
    st.lists(st.dictionaries(st.sampled_from(["role", "content", "x"]), VALUES, max_size=2), max_size=2),
    VALUES,
)


def test_text_compress_raises_only_typed_errors(models):
    from tokensift.text import compress

    def body(prompt: Any, budget: dict, method: str, question: Any, decay: Any) -> None:
        typed_only(
            lambda: compress(
                prompt, method=method, model=models["scorer"], question=question, turn_decay=decay, **budget
            )
        )

    explore(
        "text.compress",
        body,
        prompt=PROMPTS,
        budget=st.dictionaries(st.sampled_from(["ratio", "keep", "keep_tokens", "rate"]), VALUES, max_size=2),
        method=method_names("text"),
        question=st.one_of(st.none(), st.text(max_size=8)),
        decay=st.one_of(st.just(1.0), VALUES),
    )


def test_encoder_functions_raise_only_typed_errors(models):
    from tokensift.encoder import Schedule, reduce, sentence_embeddings

    bert, tokenizer = models["bert"], models["bert_tokenizer"]
    ids = torch.randint(5, 64, (2, 12), generator=torch.Generator().manual_seed(1))

    def body(texts: Any, method: Any, budget: dict, batch: Any, truncate: bool) -> None:
        def embed() -> None:
            schedule = Schedule(**budget) if budget else None
            sentence_embeddings(
                bert, tokenizer, texts, method=method, schedule=schedule, batch_size=batch, truncate=truncate,
                max_length=64,
            )  # fmt: skip

        def patched() -> None:
            with torch.no_grad(), reduce(bert, method or "tome", **budget):
                bert(input_ids=ids)

        typed_only(embed)
        typed_only(patched)
        assert not hasattr(bert, "_tokensift_patch")

    explore(
        "encoder.sentence_embeddings / reduce",
        body,
        texts=st.one_of(st.lists(st.sampled_from(["", " ", "the cat", "🙂", "the " * 70]), max_size=4), VALUES),
        method=st.one_of(st.none(), method_names("encoder")),
        budget=st.dictionaries(st.sampled_from(["ratio", "keep", "keep_tokens", "r"]), VALUES, max_size=2),
        batch=st.one_of(st.integers(-1, 4), VALUES),
        truncate=st.booleans(),
    )


def test_one_bad_argument_in_an_otherwise_good_call_is_a_typed_error(models):
    """A good call of each public function with one argument replaced by a generated value."""
    from tokensift.encoder import reduce, sentence_embeddings
    from tokensift.kv import compress as kv_compress
    from tokensift.text import compress as text_compress

    llama, bert = models["llama"], models["bert"]
    ids = torch.randint(2, 64, (1, 30), generator=torch.Generator().manual_seed(2))

    def kv_call(**kwargs: Any) -> None:
        with torch.no_grad(), kv_compress(llama, **kwargs):
            llama(ids)

    def reduce_call(**kwargs: Any) -> None:
        with torch.no_grad(), reduce(bert, **kwargs):
            bert(input_ids=ids[:, :12] % 60 + 4)

    calls: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
        "text.compress": (
            lambda **kw: text_compress(model=models["scorer"], **kw),
            {"prompt": "the cat sat on the mat", "keep": 0.5, "method": "surprisal", "question": None,
             "turn_decay": 1.0, "protect": None, "options": None, "target_tokenizer": None},
        ),
        "kv.compress": (kv_call, {"method": "snapkv", "ratio": 0.5, "window": 4, "kernel": 3}),
        "encoder.reduce": (reduce_call, {"method": "tome", "ratio": 0.5, "layers": None}),
        "encoder.sentence_embeddings": (
            lambda **kw: sentence_embeddings(bert, models["bert_tokenizer"], **kw),
            {"texts": ["the cat", "the dog ran"], "method": "pitome", "batch_size": 2, "max_length": 64},
        ),
    }  # fmt: skip

    def body(which: str, argument: int, value: Any) -> None:
        call, good = calls[which]
        name = sorted(good)[argument % len(good)]
        typed_only(lambda: call(**{**good, name: value}))

    explore(
        "one bad argument in a good call",
        body,
        which=st.sampled_from(sorted(calls)),
        argument=st.integers(0, 50),
        value=st.one_of(VALUES, st.sampled_from([float("nan"), -1, 0, 10**30, "", "snapkv:knorm", [], {}, object()])),
    )


# -- the server: generated request bodies ----------------------------------------------------------------------
def _message() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]), "content": st.text(max_size=30)}
        ),
        st.fixed_dictionaries({"role": st.just("user"), "content": st.sampled_from([" ".join(WORDS[2:20]), "a\n\nb"])}),
        st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(VALUES, max_size=2)}),
        VALUES,
    )


GOOD_BODIES = {
    "chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": " ".join(WORDS[2:20])}]},
    "completions": {"model": "tiny", "prompt": " ".join(WORDS[2:20]) + "\n\nthe cat ?"},
    "contexts": {"text": " ".join(WORDS[2:20])},
}


@st.composite
def http_case(draw: st.DrawFn) -> tuple[str, Any]:
    """A good body for an endpoint with up to three fields replaced or added by generated values."""
    endpoint = draw(st.sampled_from(list(GOOD_BODIES)))
    if draw(st.integers(0, 9)) == 0:
        return endpoint, draw(st.sampled_from([b"{", b"[]", b"null", b"\xff", b'{"model": "tiny"}']))
    body: dict[str, Any] = json.loads(json.dumps(GOOD_BODIES[endpoint]))
    ext: dict[str, Any] = {}
    if draw(st.booleans()):
        ext["kv"] = {"method": draw(method_names("kv"))}
        if draw(st.booleans()):
            ext["kv"][draw(st.sampled_from(["ratio", "keep", "keep_tokens", "query_aware"]))] = draw(VALUES)
        if draw(st.booleans()):
            ext["kv"]["options"] = draw(st.dictionaries(st.sampled_from(["window", "tokenizer", "x"]), VALUES))
    if endpoint != "contexts" and draw(st.booleans()):
        ext["prompt"] = {"method": draw(method_names("text")), "rate": draw(VALUES)}
    if endpoint != "contexts" and draw(st.booleans()):
        ext["context_id"] = draw(st.one_of(st.text(max_size=8), VALUES))
    if ext:
        body["kv" if endpoint == "contexts" and "kv" in ext and draw(st.booleans()) else "tokensift"] = (
            ext["kv"] if endpoint == "contexts" and draw(st.booleans()) and "kv" in ext else ext
        )
    fields = {
        "model": st.sampled_from(["tiny", "other", 3, None]),
        "messages": st.one_of(st.lists(_message(), max_size=3), VALUES),
        "prompt": st.one_of(st.text(max_size=40), st.lists(st.text(max_size=5), max_size=2), VALUES),
        "text": st.one_of(st.text(max_size=40), VALUES),
        "max_tokens": st.one_of(VALUES, st.sampled_from([1, 2, 500])),
        "temperature": st.one_of(VALUES, st.sampled_from([0, 0.7, 3])),
        "top_p": st.one_of(VALUES, st.sampled_from([0.5, 0])),
        "stop": st.one_of(VALUES, st.lists(st.text(max_size=3), max_size=5)),
        "n": st.one_of(VALUES, st.sampled_from([1, 2])),
        "stream": st.one_of(st.booleans(), VALUES),
        "seed": VALUES,
    }
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        body[name] = draw(fields[name])
    return endpoint, body


def test_server_answers_every_bad_body_with_a_4xx(tmp_path_factory):
    from types import SimpleNamespace

    from tests.serve.helpers import call, running
    from tokensift.serve.server import build

    loaded = SimpleNamespace(
        model=tiny_llama(context=128), tokenizer=word_level_tokenizer(), name="tiny", spec=None, path=Path(".")
    )
    server = build(loaded, store=tmp_path_factory.mktemp("store"), max_tokens=4)
    statuses: Counter[int] = Counter()
    with running(server.app) as url:

        def body(case: tuple[str, Any]) -> None:
            endpoint, payload = case
            raw = payload if isinstance(payload, bytes) else None
            status, reply = call(f"{url}/v1/{endpoint}", None if raw else payload, raw=raw)
            statuses[status] += 1
            assert status in (200, 400, 404, 410, 413, 422, 429), (case, status, reply)
            if status != 200:
                assert isinstance(reply, dict) and set(reply["error"]) == {"message", "type", "param", "code"}, reply
                assert reply["error"]["message"] and "Traceback" not in reply["error"]["message"]
            elif isinstance(reply, dict):
                assert reply.get("object") in ("chat.completion", "text_completion", "tokensift.context"), reply

        explore("HTTP request bodies", body, case=http_case())
    assert statuses[200] and statuses[400] and statuses[422], statuses
