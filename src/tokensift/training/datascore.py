"""Token-level data scoring of an instruction-tuning file: score every row, rank, keep the top fraction.

:func:`score_file` streams a JSONL file (:mod:`tokensift.training.examples`), runs the scoring model twice
per row in batches (the response after its instruction, and after an empty user turn), hands the two
per-token loss vectors to a registered data scorer (``sifd``, ``ifd``) and keeps only what ranking needs in
memory (line number, score, IFD, a few informative tokens), so a file of any length fits. :func:`keep_lines`
picks the top rows; :func:`copy_lines` writes them to a new file byte for byte, in file order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tokensift.errors import BadRowError, EmptyInputError, ParameterError
from tokensift.inputs import whole_number
from tokensift.select import Budget
from tokensift.training.examples import (
    Encoded,
    Line,
    check_file,
    encode_example,
    encode_unconditional,
    pad_id,
    read_lines,
)
from tokensift.training.finetuning import collate
from tokensift.training.methods.data import DataScore, DataScorer
from tokensift.training.stats import token_losses

Progress = Callable[[int], None]
"""``progress(rows_done)`` after each batch."""
SHOWN_TOKENS = 8
"""Informative tokens remembered per row (the most informative first) for display and ``--scores``."""


@dataclass
class RowScore:
    """One scored row: its line number, score (higher = keep), plain IFD, token counts and informative tokens."""

    line: int
    score: float
    ifd: float
    response_tokens: int
    informative_tokens: int
    informative: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ScoreReport:
    """Every scored row, every skipped line (with its error) and the time it took."""

    path: Path
    method: str
    scores: list[RowScore] = field(default_factory=list)
    skipped: list[BadRowError] = field(default_factory=list)
    seconds: float = 0.0

    def ranked(self) -> list[RowScore]:
        """Best first; equal scores in file order."""
        return sorted(self.scores, key=lambda r: (-r.score, r.line))


def count_lines(path: Path) -> int:
    """Non-blank lines of a file (for the progress bar), read in blocks."""
    check_file(path)
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _batches(lines: Iterator[Line], size: int) -> Iterator[list[Line]]:
    batch: list[Line] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def response_losses(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int) -> list[Tensor]:
    """Per response token, the loss given what precedes it, for each encoded example (one batched forward).

    The tokens every example of the batch starts with (a chat template's system turn; for the responses scored
    alone, the whole empty prompt) are run once and their KV cache shared by the batch, and only the positions
    that predict a response token go through the output layer: the same losses, a fraction of the work on
    short rows (:func:`_shared_prefix` says when the model allows it).
    """
    if _shared_prefix(model, encoded) == 0:
        ids, mask, labels = collate(encoded, pad_id)
        losses, _ = token_losses(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, labels)
        return [losses[row, len(e.prompt) - 1 : len(e.prompt) - 1 + len(e.response)] for row, e in enumerate(encoded)]
    found: list[Tensor] = [torch.empty(0)] * len(encoded)
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, example in enumerate(encoded):  # the responses scored alone share their whole prompt
        groups.setdefault(tuple(example.prompt), []).append(row)
    together = [rows for rows in groups.values() if len(rows) > 1 and len(encoded) > len(rows)]
    rest = [row for row in range(len(encoded)) if not any(row in rows for rows in together)]
    for rows in [*together, rest]:
        if rows:
            for row, losses in zip(rows, _prefixed_losses(model, [encoded[r] for r in rows], pad_id), strict=True):
                found[row] = losses
    return found


def _shared_prefix(model: torch.nn.Module, encoded: Sequence[Encoded]) -> int:
    """Tokens every example starts with, short of each prompt's last token (which predicts the response);
    0 when the model's logits are not a plain linear head over its base model's output (soft-capped or scaled
    logits) or the prefix is too short to pay for itself."""
    config = getattr(model, "config", None)
    find: Any = getattr(model, "get_output_embeddings", None)
    head = find() if find is not None else None
    plain = (
        head is not None
        and getattr(model, "base_model", None) is not None
        and model.base_model is not model
        and getattr(config, "final_logit_softcapping", None) is None
        and getattr(config, "logit_scale", None) is None
    )
    if not plain:
        return 0
    first, limit = encoded[0].ids, min(len(e.prompt) for e in encoded) - 1
    n = 0
    while n < limit and all(e.ids[n] == first[n] for e in encoded):
        n += 1
    return n if n >= 4 else 0


def _prefixed_losses(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int) -> list[Tensor]:
    """:func:`response_losses` of a group: the shared prefix prefilled once, the rest batched after it."""
    from transformers import DynamicCache

    from tokensift.kv.model import text_config

    k = _shared_prefix(model, encoded) if len(encoded) > 1 else 0
    base: Any = model.base_model
    head: Any = model.get_output_embeddings()  # type: ignore[operator]
    cache = None
    if k:
        cache = DynamicCache(config=text_config(model))
        base(input_ids=torch.tensor([encoded[0].ids[:k]]), past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(len(encoded))
    width = max(len(e.ids) for e in encoded) - k
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), k + width), dtype=torch.long)
    for row, example in enumerate(encoded):
        ids[row, : len(example.ids) - k] = torch.tensor(example.ids[k:])
        mask[row, : len(example.ids)] = 1
    hidden = base(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=k > 0).last_hidden_state
    rows = [
        hidden[row, len(e.prompt) - 1 - k : len(e.prompt) - 1 - k + len(e.response)] for row, e in enumerate(encoded)
    ]
    logits = head(torch.cat(rows)).float()  # one call: the head's weights are read once, not once per row
    targets = torch.tensor([token for e in encoded for token in e.response])
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return list(losses.split([len(e.response) for e in encoded]))


def score_examples(
    model: torch.nn.Module, tokenizer: Any, encoded: Sequence[tuple[Encoded, Encoded]], scorer: DataScorer
) -> list[tuple[DataScore, Tensor]]:
    """Each (conditional, unconditional) encoding scored in one batched forward; with each ``|delta loss|``."""
    losses = response_losses(model, [c for c, _ in encoded] + [u for _, u in encoded], pad_id(tokenizer))
    half = len(encoded)
    return [(scorer.score(c, u), (u - c).abs()) for c, u in zip(losses[:half], losses[half:], strict=True)]


def score_file(
    loaded: Any,
    path: Path,
    scorer: DataScorer,
    *,
    batch_size: int = 8,
    max_tokens: int = 2048,
    skip_bad: bool = False,
    progress: Progress | None = None,
) -> ScoreReport:
    """Score every row of ``path`` with ``scorer`` (see the module doc); a bad row raises unless ``skip_bad``.

    A row whose instruction and response need more than ``max_tokens`` tokens is a bad row (never cut).
    """
    whole_number(batch_size, "batch_size", low=1)
    whole_number(max_tokens, "max_tokens", low=2)
    model, tokenizer = loaded.model, loaded.tokenizer
    report = ScoreReport(path, scorer.name)
    start, done = time.perf_counter(), 0
    for batch in _batches(read_lines(path), batch_size):
        ready: list[tuple[int, Encoded, Encoded]] = []
        for line in batch:
            error = line.error
            if line.example is not None:
                conditional = encode_example(tokenizer, line.example)
                if len(conditional.ids) > max_tokens:
                    error = BadRowError(
                        f"{len(conditional.ids)} tokens, more than --max-tokens {max_tokens}", line=line.number
                    )
                else:
                    ready.append((line.number, conditional, encode_unconditional(tokenizer, line.example)))
            if error is not None:
                if not skip_bad:
                    raise error
                report.skipped.append(error)
        if ready:
            scores = score_examples(model, tokenizer, [(c, u) for _, c, u in ready], scorer)
            for (number, conditional, _), (scored, delta) in zip(ready, scores, strict=True):
                shown = sorted(scored.tokens, key=lambda t: -float(delta[t]))[:SHOWN_TOKENS]
                words = [tokenizer.decode([conditional.response[t]]) for t in shown]
                report.scores.append(
                    RowScore(number, scored.value, scored.ifd, int(delta.numel()), len(scored.tokens), words)
                )
        done += len(batch)
        if progress is not None:
            progress(done)
    report.seconds = time.perf_counter() - start
    if not report.scores and not report.skipped:
        raise EmptyInputError(f"{path} is empty: no rows")
    return report


def keep_lines(report: ScoreReport, budget: Budget) -> set[int]:
    """The line numbers of the top rows under ``budget`` (a fraction of the scored rows, or a row count)."""
    if not report.scores:
        return set()
    n = len(report.scores)
    if budget.keep_tokens is not None and budget.keep_tokens > n:
        raise ParameterError(f"--keep-rows {budget.keep_tokens} is more than the {n} rows scored", option="keep_rows")
    count = budget.tokens(n)
    return {row.line for row in report.ranked()[:count]}


def copy_lines(source: Path, target: Path, lines: set[int]) -> int:
    """Copy the chosen lines of ``source`` to ``target`` unchanged, in file order; returns how many."""
    if target.resolve() == source.resolve():
        raise ParameterError("--out must not be the input file", option="out")
    written = 0
    tmp = target.with_name(target.name + ".part")
    with source.open("rb") as reader, tmp.open("wb") as writer:
        for number, raw in enumerate(reader, start=1):
            if number in lines:
                writer.write(raw if raw.endswith(b"\n") else raw + b"\n")
                written += 1
    tmp.replace(target)
    return written
