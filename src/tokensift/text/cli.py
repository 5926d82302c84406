"""``tokensift compress`` and ``tokensift bench text``: the prompt-compression commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tokensift import options
from tokensift.bench import cli as bench_cli
from tokensift.errors import InputError, ParameterError

app = typer.Typer(help="Prompt compression.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

InputShape = ("text", "documents", "chat")


def _read_prompt(file: str, shape: str) -> Any:
    """The prompt from ``file`` (``-`` = stdin): plain text, or a JSON list of documents / chat messages."""
    from tokensift.inputs import read_text

    text = read_text(file)
    if shape not in InputShape:
        raise ParameterError(f"--input must be one of {', '.join(InputShape)}, got {shape!r}")
    if shape == "text":
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--input {shape} expects a JSON list: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, list):
        raise InputError(f"--input {shape} expects a JSON list, got {type(data).__name__}")
    return data


@app.command()
def compress(
    file: Annotated[str, typer.Argument(help="Prompt file, or - for standard input.")],
    ratio: options.Ratio = None,
    keep: options.Keep = None,
    keep_tokens: options.KeepTokens = None,
    rate: Annotated[float | None, typer.Option(help="LLMLingua's name for --keep.")] = None,
    question: Annotated[str | None, typer.Option(help="The question the prompt must answer (LongLLMLingua).")] = None,
    method: Annotated[str, typer.Option(help="Text method (see `tokensift methods --target text`).")] = "llmlingua",
    model: options.Model = "smollm2-135m",
    target_tokenizer: Annotated[
        Path | None, typer.Option(help="Count tokens with this local tokenizer folder (default: the model's).")
    ] = None,
    input_shape: Annotated[
        str, typer.Option("--input", help="text, documents (JSON list of strings) or chat (JSON list of messages).")
    ] = "text",
    protect: Annotated[list[str] | None, typer.Option(help="Regex of spans always kept (repeatable).")] = None,
    keep_numbers: Annotated[bool, typer.Option(help="Always keep numbers.")] = False,
    json_mode: Annotated[
        bool | None, typer.Option("--json-mode/--no-json-mode", help="Treat the text as JSON (default: detect).")
    ] = None,
    turn_decay: Annotated[float, typer.Option(help="Chat: older turns' scores weighted by decay**age.")] = 1.0,
    units: Annotated[
        str,
        typer.Option(
            help="Keep or drop whole word, phrase or sentence units (dates, numbers, names, quotes: always whole)."
        ),
    ] = "word",
    option: options.Option = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write an HTML view of kept and dropped words.")] = None,
) -> None:
    """Compress a prompt to an exact token budget (one of --ratio, --keep / --rate, --keep-tokens); the
    compressed prompt goes to stdout."""
    from tokensift.inputs import parse_options
    from tokensift.text.api import Compressor, make_budget
    from tokensift.text.units import Protect

    make_budget(ratio, keep, keep_tokens, rate)
    if html is not None and html.is_dir():
        raise ParameterError(f"--html {html} is a directory; give a file name")
    prompt = _read_prompt(file, input_shape)
    rules = Protect(numbers=keep_numbers, patterns=tuple(protect or ()), json=json_mode)
    with err.status(f"loading {model} …"):
        compressor = Compressor(
            method,
            model=model,
            target_tokenizer=target_tokenizer,
            protect=rules,
            options=parse_options(option),
            turn_decay=turn_decay,
            units=units,  # type: ignore[arg-type]  # Compressor checks it
        )
    with err.status(f"{method}: scoring and selecting …"):
        prepared = compressor.prepare(prompt, question)
        result = compressor.compress(prepared, ratio=ratio, keep=keep, keep_tokens=keep_tokens, rate=rate)
    if html is not None:
        from tokensift.text.html import compression_html

        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(compression_html(result, title=f"tokensift compress · {method}"), encoding="utf-8")
        err.print(f"wrote {html}")
    if as_json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
    elif isinstance(result.compressed, str):
        print(result.compressed)
    else:
        print(json.dumps(result.compressed, ensure_ascii=False, indent=2))
    for note in result.notes:
        err.print(f"note: {note}")
    err.print(
        f"{result.method}: {result.tokens_before:,} → {result.tokens_after:,} tokens on {result.tokenizer} "
        f"(budget {result.keep_tokens:,}, kept {result.kept_fraction:.3f}) in {result.seconds['total']:.2f} s"
    )


def _bench_options(
    distractors: Annotated[int, typer.Option(help="NQ distractor passages beside the gold one.")] = 3,
    max_length: Annotated[int, typer.Option(help="Longest rate_adherence input (tokens; 50 ... 8000).")] = 8000,
) -> dict[str, Any]:
    """Prompt compression: methods x ratios on nq_qa, gsm8k_cot and rate_adherence, LLMLingua beside
    (--peers llmlingua)."""
    return {"distractors": distractors, "max_length": max_length}


def _benchmark() -> Any:
    from tokensift.text.bench import TextBenchmark

    return TextBenchmark


bench = bench_cli.command("text", _benchmark, _bench_options, out=Path("benchmarks/out/text"))
