"""``tokensift compress`` and ``tokensift bench text``: the prompt-compression commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tokensift.errors import InputError, ParameterError

app = typer.Typer(help="Prompt compression.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

InputShape = ("text", "documents", "chat")


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` method options; values are read as JSON when they parse (numbers, booleans)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParameterError(f"--option expects key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


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
    rate: Annotated[float | None, typer.Option(help="Keep this fraction of the tokens, in (0, 1].")] = None,
    target_tokens: Annotated[int | None, typer.Option(help="Keep at most this many tokens.")] = None,
    question: Annotated[str | None, typer.Option(help="The question the prompt must answer (LongLLMLingua).")] = None,
    method: Annotated[str, typer.Option(help="Text method (see `tokensift methods --target text`).")] = "llmlingua",
    model: Annotated[
        str, typer.Option("--model", "-m", help="Scoring model: embedded name or folder.")
    ] = "smollm2-135m",
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
    option: Annotated[list[str] | None, typer.Option(help="Method option key=value (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write an HTML view of kept and dropped words.")] = None,
) -> None:
    """Compress a prompt to a rate or an exact token budget; the compressed prompt goes to stdout."""
    from tokensift.text.compress import Compressor, resolve_budget
    from tokensift.text.units import Protect

    if rate is not None:
        resolve_budget(1, rate, None)
    if target_tokens is not None:
        resolve_budget(1, None, target_tokens)
    if (rate is None) == (target_tokens is None):
        raise ParameterError("give exactly one of --rate and --target-tokens")
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
            options=_parse_options(option or []),
            turn_decay=turn_decay,
        )
    with err.status(f"{method}: scoring and selecting …"):
        result = compressor.compress(compressor.prepare(prompt, question), rate=rate, target_tokens=target_tokens)
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
        f"(target {result.target_tokens:,}, rate {result.rate:.3f}) in {result.seconds['total']:.2f} s"
    )


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def bench(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for rows.jsonl (resumable), summary.csv, plots.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Scoring and reading model.")] = "smollm2-135m",
    tasks: Annotated[str, typer.Option(help="Comma-separated: nq_qa, gsm8k_cot, rate_adherence.")] = (
        "nq_qa,gsm8k_cot,rate_adherence"
    ),
    methods: Annotated[str, typer.Option(help="Comma-separated text methods.")] = (
        "random,surprisal,selective_context,llmlingua,longllmlingua,attribution"
    ),
    rates: Annotated[str, typer.Option(help="Comma-separated requested rates.")] = "0.5,0.33",
    samples: Annotated[int, typer.Option(help="NQ questions / GSM8K test questions per cell.")] = 50,
    distractors: Annotated[int, typer.Option(help="NQ distractor passages beside the gold one.")] = 3,
    max_length: Annotated[int, typer.Option(help="Longest rate_adherence input (tokens; 50 ... 8000).")] = 8000,
    peers: Annotated[str, typer.Option(help="Peers to run beside (llmlingua), comma-separated; '' for none.")] = "",
    data_dir: Annotated[Path | None, typer.Option(help="Evaluation data folder (default ../shared/data).")] = None,
    results: Annotated[
        Path | None, typer.Option(help="Also write the report here (e.g. benchmarks/RESULTS-text.md).")
    ] = None,
    report_only: Annotated[bool, typer.Option(help="Only write the report from the rows already stored.")] = False,
    command: Annotated[str | None, typer.Option(help="Command shown at the top of the report.")] = None,
) -> None:
    """Prompt compression: methods x rates on nq_qa, gsm8k_cot and rate_adherence, peers beside."""
    import shlex
    import sys

    from tokensift.bench import RowStore
    from tokensift.inputs import data_dir as resolve_data_dir
    from tokensift.models import load_model, prefix_token_id
    from tokensift.report.progress import progress_bar
    from tokensift.text.bench import BenchConfig, report, run_bench
    from tokensift.text.scoring import Scorer

    try:
        rate_values = [float(r) for r in _split(rates)]
    except ValueError:
        raise ParameterError(f"--rates must be comma-separated numbers, got {rates!r}") from None
    shown = command or "tokensift bench text " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    config = BenchConfig(
        out_dir=out_dir,
        model=model,
        tasks=_split(tasks),
        methods=_split(methods),
        rates=rate_values,
        samples=samples,
        distractors=distractors,
        max_length=max_length,
        peers=_split(peers),
        results=results,
        command=shown,
    )
    config.check()
    if report_only:
        err.print(f"wrote {report(config, RowStore(out_dir).rows())}")
        return
    data = resolve_data_dir(data_dir)
    if data is None:
        raise InputError("no evaluation data: pass --data-dir or set $TOKENSIFT_DATA (see ../shared/data/SOURCES.md)")
    with err.status(f"loading {model} …"):
        loaded = load_model(model)
    scorer = Scorer(loaded.model, loaded.tokenizer, prefix_token_id(loaded.tokenizer, loaded.spec), loaded.name)
    with progress_bar(transient=False) as bar:
        tasks_by_label: dict[str, Any] = {}

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks_by_label:
                tasks_by_label[label] = bar.add_task(label, total=total)
            bar.update(tasks_by_label[label], completed=done, total=total)

        page = run_bench(config, scorer, loaded.path, data, progress)
    err.print(f"wrote {page}")
