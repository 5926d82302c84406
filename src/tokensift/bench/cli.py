"""``tokensift bench TARGET``: the flags every target's benchmark takes, declared once, plus the target's own.

:func:`command` makes a target's typer command from its benchmark class and a function that declares only
the target's extra flags, so ``bench kv|text|encoder`` spell the same things the same way. Cheap to import
(the CLI loads it at start-up). No ``from __future__ import annotations`` here: typer reads these
annotations as objects.
"""

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer
from rich.console import Console

from tokensift import options
from tokensift.inputs import parse_list

err = Console(stderr=True)

Model = Annotated[str | None, typer.Option("--model", "-m", help="Embedded model name or local model folder.")]
Tasks = Annotated[str | None, typer.Option(help="Comma-separated tasks (default: the target's standard set).")]
Methods = Annotated[
    str | None,
    typer.Option(help="Comma-separated methods or compositions like adakv:kvzip (default: every registered method)."),
]
Ratios = Annotated[str | None, typer.Option(help="Comma-separated fractions of tokens removed, each in [0, 1).")]
Samples = Annotated[int | None, typer.Option(help="Samples per task (default: the target's).")]
Seed = Annotated[int, typer.Option(help="Seed of the task instances.")]
Out = Annotated[Path, typer.Option("--out", help="Output folder; its rows.jsonl is resumed.")]
Peers = Annotated[str | None, typer.Option(help="Comma-separated peer systems run on the same instances.")]
Results = Annotated[
    Path | None, typer.Option(help="Also write the report page here (plots in a folder named after it).")
]
ReportOnly = Annotated[bool, typer.Option("--report-only", help="Only write the report from the stored rows.")]
Command = Annotated[str | None, typer.Option(help="Command shown at the top of the report.")]


def _shared(
    out: Out,
    model: Model = None,
    tasks: Tasks = None,
    methods: Methods = None,
    ratios: Ratios = None,
    samples: Samples = None,
    seed: Seed = 0,
    data_dir: options.DataDir = None,
    cache_dir: options.CacheDir = None,
    peers: Peers = None,
    results: Results = None,
    report_only: ReportOnly = False,
    command: Command = None,
) -> dict[str, Any]:
    """The shared flags as :class:`~tokensift.bench.config.BenchConfig` fields."""
    return {
        "out": out,
        "model": model,
        "tasks": parse_list(tasks, option="tasks"),
        "methods": parse_list(methods, option="methods"),
        "ratios": parse_list(ratios, float, option="ratios"),
        "samples": samples,
        "seed": seed,
        "data_dir": data_dir,
        "cache_dir": cache_dir,
        "peers": parse_list(peers, option="peers") or (),
        "results": results,
        "report_only": report_only,
        "command": command,
    }


def command(
    target: str, benchmark: Callable[[], Any], extras: Callable[..., dict[str, Any]], *, out: Path
) -> Callable[..., None]:
    """The typer command ``bench TARGET``: the shared flags (``--out`` defaulting to ``out``) followed by the
    parameters of ``extras``, which turns the target's own flags into the rest of its config; its help is
    ``extras``'s docstring. ``benchmark()`` returns the :class:`~tokensift.bench.benchmark.Benchmark` class, loaded
    only when the command runs."""
    shared = list(inspect.signature(_shared).parameters.values())
    shared[0] = shared[0].replace(default=out)
    hints = get_type_hints(extras, include_extras=True)
    own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(extras).parameters.values()]

    def run(**given: Any) -> None:
        fields = _shared(**{p.name: given.pop(p.name) for p in shared})
        own_fields = extras(**given)
        kind = benchmark()
        run_benchmark(kind(kind.config_class(**fields, **own_fields)))

    run.__signature__ = inspect.Signature([*shared, *own])  # type: ignore[attr-defined]
    run.__doc__ = extras.__doc__
    run.__name__ = f"bench_{target}"
    return run


def run_benchmark(benchmark: Any) -> None:
    """Run a :class:`~tokensift.bench.benchmark.Benchmark` with a progress bar; print where the report is."""
    from tokensift.report.progress import progress_bar

    if not benchmark.config.report_only:
        with err.status(f"loading {benchmark.model_name} …"):
            benchmark.load()
    with progress_bar(transient=False) as bar:
        job = bar.add_task(f"{benchmark.target} bench", total=None)

        def step(label: str, done: int, total: int) -> None:
            bar.update(job, description=label, completed=done, total=total)

        page = benchmark.run(step)
    err.print(f"wrote {page}")
