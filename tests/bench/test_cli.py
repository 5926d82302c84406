"""``tokensift bench kv|text|encoder|training|scale`` take the same flags for the same things, declared once."""

import typer

from tokensift.bench.cli import _shared
from tokensift.cli import app

SHARED = {
    "--out", "--model", "--tasks", "--methods", "--ratios", "--samples", "--seed", "--data-dir", "--cache-dir",
    "--peers", "--results", "--report-only", "--command",
}  # fmt: skip


def test_every_bench_command_takes_the_shared_flags_with_the_same_help():
    group = typer.main.get_command(app).commands["bench"]  # type: ignore[attr-defined]
    assert set(group.commands) == {"kv", "text", "encoder", "training", "scale", "vision"}
    helps: dict[str, set[str | None]] = {}
    for command in group.commands.values():
        options = {opt: param for param in command.params for opt in param.opts}
        assert set(options) >= SHARED, command.name
        for flag in SHARED:
            helps.setdefault(flag, set()).add(options[flag].help)
    assert all(len(texts) == 1 for flag, texts in helps.items() if flag != "--out"), helps
    assert len(SHARED) == len(__import__("inspect").signature(_shared).parameters)
