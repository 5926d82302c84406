"""``tokensift score-data``, ``tokensift train`` and ``tokensift bench training``: the training commands.

Cheap to import (the CLI loads it at start-up); models, torch and transformers load inside the commands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tokensift import options
from tokensift.bench import cli as bench_cli
from tokensift.errors import ParameterError
from tokensift.inputs import parse_list, parse_options, whole_number
from tokensift.report.progress import progress_bar

out = Console()
err = Console(stderr=True)

MAX_STEPS = 1_000_000
MAX_BATCH = 4096
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Skip (and count) malformed lines instead of failing.")]
MaxTokens = Annotated[int, typer.Option(help="Longest example in tokens (a longer one is a bad row, never cut).")]


def _load(model: str, cache_dir: Path | None) -> Any:
    from tokensift.models import load_model

    with err.status(f"loading {model} …"):
        return load_model(model, cache_dir=cache_dir)


def score_data(
    file: Annotated[Path, typer.Argument(help="JSONL: Alpaca, prompt/response, question/answer or chat messages.")],
    method: Annotated[str, typer.Option(help="Data scorer: sifd (T-SHIRT) or ifd.")] = "sifd",
    option: options.Option = None,
    keep: Annotated[float | None, typer.Option(help="Fraction of the rows to keep, in (0, 1].")] = None,
    keep_rows: Annotated[int | None, typer.Option(help="Rows to keep instead (an absolute count).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the kept rows here, unchanged.")] = None,
    scores: Annotated[Path | None, typer.Option(help="Write every row's score as JSONL here.")] = None,
    top: Annotated[int, typer.Option(help="Rows shown best-first (and worst) in the table.")] = 5,
    model: options.Model = "smollm2-135m",
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 8,
    max_tokens: MaxTokens = 2048,
    skip_bad: SkipBad = False,
    as_json: options.Json = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Score every row of an instruction-tuning file by its informative tokens, rank the rows, and keep the best.

    Each row's response is scored with and without its instruction; the scorer turns the two per-token loss
    vectors into one number (sifd: IFD over the tokens the instruction changes most). With --keep and --out
    the top rows are written unchanged, in file order."""
    from tokensift.methods import build
    from tokensift.select import Budget
    from tokensift.select.budget import MAX_TOKENS
    from tokensift.training.datascore import copy_lines, count_lines, keep_lines, score_file
    from tokensift.training.methods.data import DataScorer

    scorer = build("training", method, **parse_options(option))
    if not isinstance(scorer, DataScorer):
        raise ParameterError(f"{method} is a loss policy, not a data scorer; scorers: sifd, ifd", option="method")
    whole_number(top, "top", low=0)
    if keep_rows is not None:
        whole_number(keep_rows, "keep_rows", low=1, high=MAX_TOKENS)
    budget = Budget(keep=keep, keep_tokens=keep_rows) if keep is not None or keep_rows is not None else None
    if out_file is not None and budget is None:
        raise ParameterError("--out needs --keep or --keep-rows (how many rows to write)", option="out")
    for path, flag in ((out_file, "--out"), (scores, "--scores")):
        if path is not None and (path.is_dir() or path.resolve() == file.resolve()):
            raise ParameterError(f"{flag} {path} must be a new file name, not the input or a folder", option=flag[2:])
    total = count_lines(file)
    loaded = _load(model, cache_dir)
    with progress_bar() as bar:
        task = bar.add_task(f"scoring ({scorer.name})", total=total)
        report = score_file(
            loaded,
            file,
            scorer,
            batch_size=batch_size,
            max_tokens=max_tokens,
            skip_bad=skip_bad,
            progress=lambda done: bar.update(task, completed=done),
        )
    kept = keep_lines(report, budget) if budget is not None else None
    if scores is not None:
        scores.parent.mkdir(parents=True, exist_ok=True)
        with scores.open("w", encoding="utf-8") as handle:
            for rank, row in enumerate(report.ranked(), start=1):
                record = {**row.as_dict(), "rank": rank, "kept": None if kept is None else row.line in kept}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    written = copy_lines(file, out_file, kept) if out_file is not None and kept is not None else None
    ranked = report.ranked()
    summary = {
        "file": str(file),
        "method": scorer.name,
        "model": loaded.name,
        "rows": len(report.scores),
        "skipped": len(report.skipped),
        "skipped_lines": [e.line for e in report.skipped],
        "kept": None if kept is None else len(kept),
        "out": None if out_file is None else str(out_file),
        "written": written,
        "seconds": round(report.seconds, 3),
        "rows_per_second": round(len(report.scores) / report.seconds, 3) if report.seconds else None,
        "top": [r.as_dict() for r in ranked[:top]],
        "bottom": [r.as_dict() for r in ranked[-top:]] if top else [],
    }
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return
    table = Table(title=f"{file.name} · {scorer.name} · {loaded.name}")
    for column in ("rank", "line", "score", "IFD", "tokens", "informative tokens"):
        table.add_column(column)
    shown = list(enumerate(ranked, 1))
    picked = shown if len(shown) <= 2 * top else shown[:top] + shown[-top:]
    for rank, row in picked:
        words = " ".join(repr(w) for w in row.informative)
        table.add_row(
            str(rank), str(row.line), f"{row.score:.4f}", f"{row.ifd:.4f}", str(row.response_tokens), escape(words)
        )
    out.print(table)
    lines = [f"{len(report.scores)} rows scored in {report.seconds:.1f} s"]
    if report.skipped:
        lines.append(f"{len(report.skipped)} bad rows skipped (first: {report.skipped[0]})")
    if written is not None:
        lines.append(f"wrote {written} rows to {out_file}")
    err.print("; ".join(lines))


def train(
    file: Annotated[Path, typer.Argument(help="Training JSONL (Alpaca, prompt/response, question/answer, messages).")],
    policy: Annotated[str, typer.Option(help="Token selection policy (see `tokensift methods --target training`).")] = (
        "none"
    ),
    keep: options.Keep = None,
    ratio: options.Ratio = None,
    option: options.Option = None,
    backward: Annotated[
        str,
        typer.Option(
            help="sparse: backward over the selected tokens only; response: over every response token (prompt "
            "constant); exact: full backward, loss masked."
        ),
    ] = "sparse",
    reference: Annotated[
        str | None, typer.Option(help="Reference model for rho1 (default: the starting model, frozen).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 40,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 5e-5,
    seed: Annotated[int, typer.Option(help="Seed of the example order and random selection.")] = 0,
    max_tokens: MaxTokens = 512,
    eval_file: Annotated[
        Path | None, typer.Option("--eval", help="Held-out JSONL: reference log-prob before and after.")
    ] = None,
    eval_samples: Annotated[int, typer.Option(help="Held-out rows evaluated (the first ones).")] = 100,
    answers: Annotated[int, typer.Option(help="Of those, greedy answers checked (final number, GSM8K).")] = 0,
    save: Annotated[Path | None, typer.Option(help="Save the fine-tuned model and tokenizer to this folder.")] = None,
    model: options.Model = "smollm2-135m",
    as_json: options.Json = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Fine-tune a causal LM on the CPU with a token-selective loss; report tokens back-propagated and time spent.

    The policy picks which tokens' loss is trained (`tokensift methods --target training`; none = all). With
    --backward sparse the unselected tokens are constant context, so backward costs follow the selection."""
    from tokensift.methods import build
    from tokensift.training.examples import load_examples
    from tokensift.training.finetuning import BACKWARDS, evaluate, finetune
    from tokensift.training.methods.base import TokenPolicy
    from tokensift.training.reference import Reference

    built = build("training", policy, keep=keep, ratio=ratio, **parse_options(option))
    if not isinstance(built, TokenPolicy):
        raise ParameterError(f"{policy} is a data scorer, not a loss policy", option="policy")
    if backward not in BACKWARDS:
        raise ParameterError(f"--backward must be one of {', '.join(BACKWARDS)}, got {backward!r}", option="backward")
    whole_number(steps, "steps", low=1, high=MAX_STEPS)
    whole_number(batch_size, "batch_size", low=1, high=MAX_BATCH)
    whole_number(eval_samples, "eval_samples", low=1)
    whole_number(answers, "answers", low=0)
    if not (isinstance(lr, float | int) and math.isfinite(lr) and lr > 0):
        raise ParameterError(f"--lr must be a positive finite number, got {lr}", option="lr")
    if save is not None and save.exists() and not save.is_dir():
        raise ParameterError(f"--save {save} is a file; give a folder", option="save")
    examples = load_examples(file)
    held_out = load_examples(eval_file)[:eval_samples] if eval_file is not None else []
    loaded = _load(model, cache_dir)
    ref = None
    if built.needs_reference:
        import copy

        ref_model = _load(reference, cache_dir).model if reference else copy.deepcopy(loaded.model)
        ref = Reference(ref_model.eval())
    before = evaluate(loaded.model, loaded.tokenizer, held_out, answers=answers) if held_out else None
    with progress_bar() as bar:
        task = bar.add_task(f"training ({built.name})", total=steps)
        result = finetune(
            loaded.model,
            loaded.tokenizer,
            examples,
            built,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            backward=backward,  # type: ignore[arg-type]
            reference=ref,
            max_tokens=max_tokens,
            progress=lambda step, total, loss: bar.update(task, completed=step, description=f"loss {loss:.3f}"),
        )
    after = evaluate(loaded.model, loaded.tokenizer, held_out, answers=answers) if held_out else None
    if save is not None:
        loaded.model.save_pretrained(save)
        loaded.tokenizer.save_pretrained(save)
    record = {
        "model": loaded.name,
        "file": str(file),
        "policy": built.name,
        "keep": built.budgeted.kept_fraction,
        "backward": backward,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        **{f"tokens_{k}": v for k, v in result.counts.as_dict().items() if k != "steps"},
        "forward_s": round(result.forward_s, 3),
        "backward_s": round(result.backward_s, 3),
        "optimizer_s": round(result.optimizer_s, 3),
        "wall_s": round(result.wall_s, 3),
        "loss_first": result.losses[0],
        "loss_last": result.losses[-1],
        "eval_before": None if before is None else before.__dict__,
        "eval_after": None if after is None else after.__dict__,
        "saved": None if save is None else str(save),
    }
    if as_json:
        print(json.dumps(record))
        return
    table = Table(title=f"{loaded.name} · {built.name} · {backward} backward · {steps} steps")
    table.add_column("")
    table.add_column("value")
    counts = result.counts
    table.add_row("tokens with a label", f"{counts.labelled:,}")
    table.add_row("tokens whose loss was trained", f"{counts.selected:,} ({counts.selected_fraction:.1%})")
    table.add_row("positions back-propagated", f"{counts.backward:,}")
    table.add_row(
        "forward / backward / optimizer s",
        f"{result.forward_s:.1f} / {result.backward_s:.1f} / {result.optimizer_s:.1f}",
    )
    table.add_row("loss first → last step", f"{result.losses[0]:.3f} → {result.losses[-1]:.3f}")
    if before is not None and after is not None:
        table.add_row(
            "held-out log-prob / token", f"{before.logprob:.4f} → {after.logprob:.4f} ({after.examples} rows)"
        )
        if after.accuracy is not None and before.accuracy is not None:
            table.add_row("held-out accuracy", f"{before.accuracy:.1%} → {after.accuracy:.1%} ({after.answered} rows)")
    out.print(table)
    if save is not None:
        err.print(f"saved to {save}")


def _bench_options(
    steps: Annotated[int, typer.Option(help="Optimizer steps of each selective-loss fine-tune.")] = 40,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 5e-5,
    max_tokens: Annotated[int, typer.Option(help="Training problems longer than this are left out.")] = 320,
    answers: Annotated[int, typer.Option(help="Held-out problems also answered greedily (accuracy).")] = 0,
    pool: Annotated[int, typer.Option(help="Training problems scored for data selection.")] = 400,
    data_keep: Annotated[float, typer.Option(help="Fraction of the pool kept by score (and at random).")] = 0.3,
    scorer: Annotated[str, typer.Option(help="Data scorer for data selection (sifd, ifd).")] = "sifd",
    reference_steps: Annotated[
        int, typer.Option(help="Full-loss steps training Rho-1's reference on problems the runs do not see.")
    ] = 40,
    backward: Annotated[
        str, typer.Option(help="Backward modes of the policies' runs, comma-separated: sparse, response, exact.")
    ] = "sparse",
    budget_factor: Annotated[
        float, typer.Option(help="Task budget: each run back-propagates the full run's positions divided by this.")
    ] = 2.0,
) -> dict[str, Any]:
    """GSM8K fine-tunes of the embedded model: full loss vs selection policies at each budget (--ratios = fraction
    of tokens not back-propagated), and data selection (top vs random vs all); held-out log-prob of reference
    solutions on --samples test problems; resumable rows, summary CSV, plots, report."""
    return {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "max_tokens": max_tokens,
        "answers": answers,
        "pool": pool,
        "data_keep": data_keep,
        "scorer": scorer,
        "reference_steps": reference_steps,
        "backward": parse_list(backward, option="backward"),
        "budget_factor": budget_factor,
    }


def _benchmark() -> Any:
    from tokensift.training.bench import TrainingBenchmark

    return TrainingBenchmark


bench = bench_cli.command("training", _benchmark, _bench_options, out=Path("benchmarks/out/training"))
