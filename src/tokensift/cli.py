"""The ``tokensift`` command line. Every user error exits non-zero with a one-line message."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tokensift import options
from tokensift.batch import cli as batch_cli
from tokensift.encoder import cli as encoder_cli
from tokensift.errors import ParameterError, TokensiftError
from tokensift.kv import cli as kv_cli
from tokensift.report.progress import progress_bar
from tokensift.serve import cli as serve_cli
from tokensift.text import cli as text_cli
from tokensift.training import cli as training_cli
from tokensift.vision import cli as vision_cli

app = typer.Typer(
    name="tokensift",
    help="Find the informative tokens in a sequence and act on them: scores -> select -> reduce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

bench_app = typer.Typer(
    help="Benchmarks: tasks x methods x budgets on one model; resumable JSONL, CSV, plots.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
# Target sub-commands live next to their adapters (tokensift/<target>/cli.py, cheap to import) and are
# attached here with one line each, e.g. app.add_typer(kv_cli.app, name="kv"); bench_app.command("kv")(kv_cli.bench)
app.add_typer(kv_cli.app, name="kv")
app.add_typer(batch_cli.app, name="batch")
app.command("serve")(serve_cli.serve)
bench_app.command("kv")(kv_cli.bench)
app.command("compress")(text_cli.compress)
bench_app.command("text")(text_cli.bench)
app.command("embed")(encoder_cli.embed)
app.command("merges")(encoder_cli.merges)
bench_app.command("encoder")(encoder_cli.bench)
app.command("score-data")(training_cli.score_data)
app.command("train")(training_cli.train)
# visual tokens of a VLM
app.command("vision")(vision_cli.vision)
bench_app.command("vision")(vision_cli.bench)
bench_app.command("training")(training_cli.bench)
bench_app.command("scale")(batch_cli.bench)


def _load(model: str, cache_dir: Path | None) -> Any:
    from tokensift.models import load_model

    with err.status(f"loading {model} …"):
        loaded = load_model(model, cache_dir=cache_dir)
    err.print(f"[dim]loaded {loaded.name} in {loaded.load_seconds:.1f} s[/dim]")
    return loaded


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """List the embedded models: size, layers, heads, KV heads, context, and whether the cache is built."""
    from tokensift.models import model_status

    rows = model_status(cache_dir)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": r.spec.name,
                        "title": r.spec.title,
                        "kind": r.spec.kind,
                        "params_millions": r.spec.params_m,
                        "layers": r.spec.layers,
                        "heads": r.spec.heads,
                        "kv_heads": r.spec.kv_heads,
                        "context": r.spec.context,
                        "installed": r.installed,
                        "cache_built": r.cache_built,
                        "cache_path": str(r.cache_path) if r.cache_path else None,
                        "install": r.spec.install,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    table = Table(title="Embedded models")
    for column in ("name", "kind", "params", "layers", "heads", "KV heads", "context", "installed", "cache"):
        table.add_column(column)
    for r in rows:
        cache = "ready" if not r.spec.converted else ("built" if r.cache_built else "not built")
        table.add_row(
            r.spec.name,
            r.spec.kind,
            f"{r.spec.params_m}M",
            str(r.spec.layers),
            str(r.spec.heads),
            str(r.spec.kv_heads),
            f"{r.spec.context:,}",
            "yes" if r.installed else f"no: {r.spec.install}",
            cache if r.installed else "-",
        )
    out.print(table)


@app.command()
def methods(
    target: Annotated[str | None, typer.Option(help="Only this target: kv, text, encoder, vision, training.")] = None,
    as_json: options.Json = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the README's method table.")] = False,
    readme: Annotated[
        Path | None, typer.Option(help="Rewrite the method table of this README (between its markers).")
    ] = None,
) -> None:
    """List the registered methods: target, name, what wraps what, paper (with its arXiv id) and options."""
    from tokensift.methods import list_methods

    found = list_methods(target)
    if readme is not None:
        _update_readme(readme, method_table(list_methods()))
        return
    if as_json:
        print(json.dumps([m.as_dict() for m in found], indent=2))
        return
    if markdown:
        print(method_table(found))
        return
    table = Table(title="Methods (compose wrappers as wrapper:method, e.g. adakv:kvzip)")
    for column in ("target", "name", "summary", "paper", "options"):
        table.add_column(column)
    for m in found:
        wraps = f" [dim](wraps {m.wraps} by default)[/dim]" if m.wraps else ""
        paper = "baseline" if m.paper is None else f"{m.paper.cite} ({m.paper.id})"
        shown = ", ".join(f"{k}={v!r}" for k, v in m.options().items())
        table.add_row(m.target, m.name, escape(m.summary) + wraps, paper, escape(shown))
    out.print(table)


README_BLOCK = ("<!-- methods:start -->", "<!-- methods:end -->")


def _update_readme(path: Path, table: str) -> None:
    from tokensift.inputs import read_text

    text = read_text(path)
    start, end = README_BLOCK
    if start not in text or end not in text:
        raise ParameterError(f"--readme {path} has no {start} … {end} block", option="readme")
    head, rest = text.split(start, 1)
    path.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")
    err.print(f"wrote the method table of {path}")


def method_table(found: list[Any]) -> str:
    """The Markdown table of methods (the README's copy is checked against it)."""
    lines = ["| target | method | what it keeps | paper |", "|---|---|---|---|"]
    for m in found:
        wraps = f" (wrapper: `{m.name}:METHOD`, default `{m.name}:{m.wraps}`)" if m.wraps else ""
        paper = "baseline" if m.paper is None else f"{m.paper.cite}, [{m.paper.id}]({m.paper.url})"
        lines.append(f"| {m.target} | `{m.name}` | {m.summary}{wraps} | {paper} |")
    return "\n".join(lines)


@app.command()
def inspect(
    file: Annotated[str, typer.Argument(help="Text file to inspect, or - for standard input.")],
    model: options.Model = "smollm2-135m",
    quantile: Annotated[float, typer.Option(help="Flag tokens above this quantile of the text's surprisals.")] = 0.95,
    zscore: Annotated[float | None, typer.Option(help="Flag tokens above mean + Z std instead of a quantile.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Score only the first N tokens (reported, never silent).")
    ] = None,
    window: Annotated[
        int | None, typer.Option(help="Tokens per scoring window (default 2048, or the context if smaller).")
    ] = None,
    stride: Annotated[int | None, typer.Option(help="Window advance (default: half a window).")] = None,
    lines: Annotated[bool, typer.Option("--lines", help="Per-line summary, lines ranked (event logs).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document (one record per token).")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML heat map here.")] = None,
    cache_dir: options.CacheDir = None,
) -> None:
    """Show each token's surprisal and entropy under a language model and flag the surprising ones."""
    from tokensift.inputs import read_text
    from tokensift.inspection import FlagRule, inspect_text
    from tokensift.models import prefix_token_id

    rule = FlagRule(quantile=quantile, zscore=zscore)
    for name, value in (("max_tokens", max_tokens), ("window", window), ("stride", stride)):
        if value is not None and value < 1:
            raise ParameterError(f"--{name.replace('_', '-')} must be at least 1, got {value}", option=name)
    text = read_text(file)
    loaded = _load(model, cache_dir)
    with progress_bar() as bar:
        task = bar.add_task("scoring windows", total=None)
        result = inspect_text(
            text,
            loaded.model,
            loaded.tokenizer,
            model_name=loaded.name,
            prefix_id=prefix_token_id(loaded.tokenizer, loaded.spec),
            rule=rule,
            window=window,
            stride=stride,
            max_tokens=max_tokens,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if html is not None:
        _write_html(result, html)
    if as_json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
    else:
        from tokensift.report.terminal import print_inspection

        print_inspection(out, result, show_lines=lines)
    note = f" (first {len(result.tokens):,} of {result.total_tokens:,} tokens)" if result.truncated else ""
    err.print(f"perplexity {result.perplexity:.2f} over {len(result.scored):,} scored tokens{note}")


def _write_html(result: Any, path: Path) -> None:
    from tokensift.report.html import inspection_html

    if path.is_dir():
        raise ParameterError(f"--html {path} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(inspection_html(result), encoding="utf-8")
    err.print(f"wrote {path}")


@app.command()
def demo(
    model: options.Model = "smollm2-135m",
    data_dir: options.DataDir = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the demo's reports.")] = Path("tokensift-demo"),
    cache_dir: options.CacheDir = None,
) -> None:
    """Run the main job on the embedded model with no arguments: inspect a real text and write the HTML."""
    from tokensift.demo import run_demo

    run_demo(out, err, model=model, data_dir=data_dir, out_dir=out_dir, load=lambda: _load(model, cache_dir))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _bad_argument() -> str | None:
    """The first command-line argument that is not valid UTF-8 (Python keeps its bytes as surrogates)."""
    for number, argument in enumerate(sys.argv[1:], 1):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            return f"argument {number} is not valid UTF-8; pass text as UTF-8 (or in a file)"
    return None


def main() -> None:
    """Console entry point. Every mistake of the user's ends in one line on stderr and a non-zero exit:
    tokensift's typed errors (exit 2), usage errors (exit 2), interruption (130). Anything else is a bug in
    tokensift: one line too, with how to see the traceback (``TOKENSIFT_DEBUG=1``)."""
    problem = _bad_argument()
    if problem is not None:
        err.print(f"[bold red]error:[/bold red] {escape(problem)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer's own copy of click

    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # a command group named alone: its help, as --help would show it
        print(exc.ctx.get_help() if exc.ctx is not None else str(exc))
        sys.exit(0)
    except ClickException as exc:
        err.print(
            f"[bold red]error:[/bold red] {escape(_one_line(exc.format_message()))}", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except TokensiftError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(_one_line(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("TOKENSIFT_DEBUG"):
            raise
        message = _one_line(f"{type(exc).__name__}: {exc}")[:300]
        err.print(
            f"[bold red]internal error:[/bold red] {escape(message)} (a bug in tokensift; rerun with TOKENSIFT_DEBUG=1 "
            "for the traceback and report it)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
