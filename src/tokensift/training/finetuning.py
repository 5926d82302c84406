"""A small supervised fine-tune with a token selection policy, and the held-out evaluation that judges it.

:func:`finetune` runs a fixed number of optimizer steps over instruction examples (chat-formatted, the loss
on the response only), either the exact way (full forward and backward, the policy masks the loss:
:class:`~tokensift.training.loss.SelectiveLoss`) or the sparse way (:func:`~tokensift.training.sparse.sparse_step`,
backward over the selected tokens only). It times forward, backward and optimizer separately, because the
claim to check is backward compute. :func:`evaluate` measures the mean log-probability per token of reference
responses and, optionally, exact-match accuracy of greedy answers (GSM8K's final number).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from tokensift.errors import ParameterError
from tokensift.inputs import whole_number
from tokensift.training.examples import Encoded, Example, encode_example, pad_id
from tokensift.training.loss import Counts, SelectiveLoss
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.sparse import Context, sparse_step
from tokensift.training.stats import IGNORE, token_losses

Backward = Literal["exact", "sparse", "response"]
"""``exact``: full forward and backward, the loss masked; ``sparse``: gradients through the selected tokens
only; ``response``: through every labelled (response) token, the loss still on the selection."""
BACKWARDS: tuple[str, ...] = ("exact", "sparse", "response")
StepProgress = Callable[[int, int, float], None]
"""``progress(step, steps, loss)`` after each optimizer step."""


def collate(encoded: Sequence[Encoded], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``(input_ids, attention_mask, labels)``; labels cover the response tokens only."""
    width = max(len(e.ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(encoded):
        n, p = len(example.ids), len(example.prompt)
        ids[row, :n] = torch.tensor(example.ids)
        mask[row, :n] = 1
        labels[row, p:n] = torch.tensor(example.response)
    return ids, mask, labels


def encode_all(tokenizer: Any, examples: Sequence[Example], max_tokens: int) -> list[Encoded]:
    """Encode every example; one longer than ``max_tokens`` is an error naming it (never cut silently)."""
    found = []
    for index, example in enumerate(examples):
        encoded = encode_example(tokenizer, example)
        if len(encoded.ids) > max_tokens:
            raise ParameterError(
                f"example {index} has {len(encoded.ids)} tokens, more than --max-tokens {max_tokens}",
                option="max_tokens",
            )
        found.append(encoded)
    return found


def order(count: int, steps: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Batches of example indices for ``steps`` steps: a fresh shuffle every epoch, seeded."""
    rng = random.Random(seed)
    pool: list[int] = []
    for _ in range(steps):
        batch: list[int] = []
        while len(batch) < batch_size:
            if not pool:
                pool = list(range(count))
                rng.shuffle(pool)
            batch.append(pool.pop())
        yield batch


@dataclass
class TrainResult:
    """What a fine-tune did: steps, token counts and seconds spent in each phase."""

    steps: int
    counts: Counts
    forward_s: float = 0.0
    backward_s: float = 0.0
    optimizer_s: float = 0.0
    losses: list[float] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return self.forward_s + self.backward_s + self.optimizer_s


def finetune(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    policy: TokenPolicy,
    *,
    steps: int,
    batch_size: int = 4,
    lr: float = 5e-5,
    seed: int = 0,
    backward: Backward = "sparse",
    reference: Any = None,
    max_tokens: int = 512,
    progress: StepProgress | None = None,
    backward_budget: int | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` AdamW steps on ``examples`` with ``policy`` (see the module doc).

    With ``backward_budget`` the run is a fixed backward compute: it stops after the step whose positions
    back-propagated (summed over steps) reach the budget, ``steps`` being the most it may take.
    """
    whole_number(steps, "steps", low=1)
    if backward_budget is not None:
        whole_number(backward_budget, "backward_budget", low=1)
    whole_number(batch_size, "batch_size", low=1)
    if not examples:
        raise ParameterError("no training examples", option="examples")
    if backward not in BACKWARDS:
        raise ParameterError(f"backward must be one of {', '.join(BACKWARDS)}, got {backward!r}", option="backward")
    if policy.needs_reference and reference is None:
        raise ParameterError(f"{policy.name} needs a reference model", option="reference")
    encoded = encode_all(tokenizer, examples, max_tokens)
    pad = pad_id(tokenizer)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loss_fn = SelectiveLoss(policy, reference=reference)
    result = TrainResult(steps, Counts())
    model.train()
    try:
        for step, batch in enumerate(order(len(encoded), steps, batch_size, seed), start=1):
            ids, mask, labels = collate([encoded[i] for i in batch], pad)
            start = time.perf_counter()
            if backward != "exact":
                context: Context = "selected" if backward == "sparse" else "labelled"
                done = sparse_step(
                    model, ids, labels, policy, attention_mask=mask, reference=reference, context=context
                )
                loss, labelled, selected = done.loss, done.stats.count, done.selected
                positions = done.backward_positions
            else:
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                loss = loss_fn(logits, labels, input_ids=ids, attention_mask=mask)
                labelled, selected, positions = loss_fn.counts.labelled, loss_fn.counts.selected, int(mask.sum())
                loss_fn.counts = Counts()
            forward = time.perf_counter()
            loss.backward()
            backward_done = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            result.forward_s += forward - start
            result.backward_s += backward_done - forward
            result.optimizer_s += time.perf_counter() - backward_done
            result.counts.add(labelled, selected, positions)
            result.losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, steps, result.losses[-1])
            if backward_budget is not None and result.counts.backward >= backward_budget:
                break
    finally:
        model.eval()
    result.steps = result.counts.steps
    return result


@dataclass
class Evaluation:
    """Held-out quality: mean log-probability per reference token, and accuracy when answers were generated."""

    logprob: float
    tokens: int
    examples: int
    accuracy: float | None = None
    answered: int = 0


@torch.no_grad()
def reference_logprob(
    model: torch.nn.Module, tokenizer: Any, examples: Sequence[Example], *, batch_size: int = 8, max_tokens: int = 1024
) -> tuple[float, int]:
    """Mean log-probability per token of each example's response given its prompt (nats), and the token count."""
    encoded = encode_all(tokenizer, examples, max_tokens)
    pad = pad_id(tokenizer)
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        ids, mask, labels = collate(encoded[start : start + batch_size], pad)
        losses, valid = token_losses(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, labels)
        total -= float(losses.sum())
        count += int(valid.sum())
    return total / max(count, 1), count


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The answer a GSM8K solution ends with: the number after ``####``, else the last number (commas dropped)."""
    _, mark, after = text.partition("####")
    found = _NUMBER.findall(after if mark else text)
    if not found:
        return None
    value = (found[0] if mark else found[-1]).replace(",", "").rstrip(".")
    return value[:-2] if value.endswith(".0") else value


@torch.no_grad()
def greedy_answers(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
) -> list[str]:
    """Greedy continuations of each example's prompt (left-padded batches, stopped at the end-of-turn token)."""
    pad = pad_id(tokenizer)
    found: list[str] = []
    for start in range(0, len(examples), batch_size):
        prompts = [encode_example(tokenizer, e).prompt for e in examples[start : start + batch_size]]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        found.extend(tokenizer.decode(row[width:], skip_special_tokens=True) for row in out)
    return found


def evaluate(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    answers: int = 0,
    max_new_tokens: int = 256,
) -> Evaluation:
    """Reference log-prob over ``examples``; exact-match accuracy of the final number on the first ``answers``."""
    logprob, tokens = reference_logprob(model, tokenizer, examples)
    evaluation = Evaluation(logprob, tokens, len(examples))
    if answers:
        chosen = list(examples[:answers])
        generated = greedy_answers(model, tokenizer, chosen, max_new_tokens=max_new_tokens)
        right = sum(
            final_number(g) is not None and final_number(g) == final_number(e.response)
            for g, e in zip(generated, chosen, strict=True)
        )
        evaluation.accuracy, evaluation.answered = right / len(chosen), len(chosen)
    return evaluation


__all__ = ["Evaluation", "TrainResult", "collate", "evaluate", "final_number", "finetune"]
