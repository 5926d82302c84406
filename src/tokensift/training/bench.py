"""``tokensift bench training``: selective-loss fine-tunes and data selection on the shared benchmark skeleton.

Both tasks fine-tune the model on GSM8K train (chat format, loss on the solution) from the same starting
weights with the same example order, and judge it on the first ``--samples`` GSM8K test problems: mean
log-probability per token of the reference solution (headline) and, with ``--answers N``, exact match of the
final number of greedy answers to the first N. One row per fine-tune.

* ``selective``: the full loss (``full``: every token, exact backward) against each policy at each budget
  (``--ratios`` = fraction of tokens whose loss is dropped), trained with each ``--backward`` mode (the row's
  ``mode``): ``sparse`` back-propagates the selected tokens only, ``response`` every response token (the
  prompt constant), ``exact`` masks the loss of a full backward (the papers' objective); the cost columns
  are the tokens whose loss was kept, the positions back-propagated and the seconds spent in forward,
  backward and optimizer — measured, in one process, so the ratios are comparable. Rho-1's reference model
  is the starting model fine-tuned with the full loss for ``--reference-steps`` on problems no run trains
  on (its own row, ``reference``), as the paper trains its reference on data set apart.
* ``budget``: the same policies at the same ratios at a fixed backward compute: sparse backward until each
  run has back-propagated ``1 / --budget-factor`` of the positions the full-loss run back-propagated (its
  ``selective`` row, trained first when missing). A run that spends less per step takes more steps (on
  more problems); the question is whether it reaches the full run's held-out figure on that compute.
* ``data_selection``: ``--pool`` training problems scored by ``score-data``'s scorer (``sifd``); one epoch
  over the top ``--data-keep`` of them (``top``), over a random subset of the same size (``random``), and
  over the whole pool (``all``: more steps, the same epoch), each with the full loss.

Training problems longer than ``--max-tokens`` (template included) are left out of the pool (counted in the
report) so a CPU step stays bounded.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tokensift.bench import FULL, BenchConfig, Benchmark, WorkItem
from tokensift.bench import data as files
from tokensift.errors import ParameterError
from tokensift.inputs import whole_number
from tokensift.select import Budget
from tokensift.training.examples import Example, encode_example, parse_row
from tokensift.training.finetuning import TrainResult, evaluate, finetune
from tokensift.training.loss import Counts

QUALITY = {"selective": "logprob", "budget": "logprob", "data_selection": "logprob", "speed": "backward_speedup"}
SPEED_BATCHES = 8
"""Batches timed per mode by the ``speed`` task (interleaved, medians reported)."""
START = "start"
"""Row of the starting model, not trained: the held-out figures every run improves on."""
REFERENCE = "reference"
"""Row of Rho-1's reference model: the starting model fine-tuned with the full loss on problems set apart."""
COST = ("tokens_selected", "backward_positions", "backward_s", "wall_s", "accuracy")
SUBSETS = ("top", "random", "all")


def budget_mode(factor: float) -> str:
    """The ``mode`` of a ``budget`` row: sparse backward on the full run's positions divided by ``factor``."""
    return f"sparse-div{factor:g}"


@dataclass
class TrainingBenchConfig(BenchConfig):
    """``tokensift bench training``: the shared fields (``samples`` = held-out test problems) plus the run's size."""

    steps: int = 40
    batch_size: int = 4
    lr: float = 5e-5
    max_tokens: int = 320
    answers: int = 0
    pool: int = 400
    data_keep: float = 0.3
    scorer: str = "sifd"
    reference_steps: int = 40
    backward: tuple[str, ...] = ("sparse",)
    """Backward modes of the policies' runs: ``sparse`` (selected tokens only), ``response`` (every response
    token, prompt constant) and/or ``exact`` (masked loss)."""
    budget_factor: float = 2.0
    """``budget`` task: each run back-propagates the full-loss run's positions divided by this (a sparse
    position costs up to ~1.3x a full one, its queries reading the whole context, so 2 is ~1.5-1.9x less time)."""


class TrainingBenchmark(Benchmark):
    """Selective loss and data selection on GSM8K with the embedded instruct model."""

    target = "training"
    heading = "Training: token-selective loss and data selection"
    config_class = TrainingBenchConfig
    quality = QUALITY
    cost = COST
    needs: ClassVar[dict[str, tuple[str, ...]]] = {
        "speed": ("gsm8k/train.jsonl",),
        "selective": ("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
        "budget": ("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
        "data_selection": ("gsm8k/train.jsonl",),
    }
    default_model = "smollm2-135m"
    default_tasks = ("speed", "selective", "data_selection")
    default_ratios = (0.4, 0.7)
    default_samples = 100
    config: TrainingBenchConfig

    def registered(self) -> list[str]:
        """The loss policies the grid compares by default: those that say so (``in_default_bench``)."""
        from tokensift.methods import list_methods
        from tokensift.training.methods.base import TokenPolicy

        return [m.name for m in list_methods("training") if issubclass(m.cls, TokenPolicy) and m.cls.in_default_bench]

    def check(self) -> None:
        super().check()
        from tokensift.methods import build
        from tokensift.training.methods.base import TokenPolicy
        from tokensift.training.methods.data import DataScorer

        for method in self.methods:
            if not isinstance(build("training", method), TokenPolicy):
                raise ParameterError(f"{method} is not a loss policy", option="methods")
        if not isinstance(build("training", self.config.scorer), DataScorer):
            raise ParameterError(f"{self.config.scorer} is not a data scorer", option="scorer")
        for name in ("steps", "batch_size", "pool", "reference_steps"):
            whole_number(getattr(self.config, name), name, low=1)
        whole_number(self.config.max_tokens, "max_tokens", low=8)
        whole_number(self.config.answers, "answers", low=0)
        if not 1.0 <= self.config.budget_factor <= 100.0:
            raise ParameterError(
                f"--budget-factor must be between 1 and 100, got {self.config.budget_factor}", option="budget_factor"
            )
        Budget(keep=self.config.data_keep)
        from tokensift.training.finetuning import BACKWARDS

        unknown = [m for m in self.config.backward if m not in BACKWARDS]
        if unknown or not self.config.backward:
            raise ParameterError(f"--backward takes {', '.join(BACKWARDS)}, got {unknown or 'none'}", option="backward")

    # -- data --------------------------------------------------------------------------------------------
    def setup(self) -> None:
        assert self.data is not None
        tokenizer = self.loaded.tokenizer
        rows = files.gsm8k(self.data, "train")
        order = list(range(len(rows)))
        random.Random(self.config.seed).shuffle(order)
        self.train: list[Example] = []
        self.too_long = 0
        for index in order:
            example = parse_row(rows[index], index + 1)
            if len(encode_example(tokenizer, example).ids) <= self.config.max_tokens:
                self.train.append(example)
            else:
                self.too_long += 1
        tests = files.gsm8k(self.data, "test")[: self.samples]
        self.test = [parse_row(row, i + 1) for i, row in enumerate(tests)]
        reserved = self.config.reference_steps * self.config.batch_size
        used = max(self.config.steps * self.config.batch_size, self.config.pool)
        if reserved + used > len(self.train):
            raise ParameterError(
                f"{len(self.train)} training problems fit --max-tokens; the runs need {used}, the reference {reserved}",
                option="pool",
            )
        self.reference_train = self.train[-reserved:]
        self.start = copy.deepcopy(self.loaded.model.state_dict())
        self.reference: Any = None

    def plan(self) -> list[WorkItem]:
        from tokensift.methods import build

        items = []
        if "selective" in self.tasks:
            items.append(WorkItem("selective · starting model", ("selective", "exact", START, 0.0)))
            items.append(WorkItem("selective · full", ("selective", "exact", FULL, 0.0)))
            if any(build("training", m).needs_reference for m in self.methods):
                items.append(WorkItem("selective · reference model", ("selective", "exact", REFERENCE, 0.0)))
            for mode in self.config.backward:
                for method in self.methods:
                    for ratio in self.ratios:
                        label = f"selective · {method} @ {1 - ratio:.0%} · {mode}"
                        items.append(WorkItem(label, ("selective", mode, method, ratio)))
        if "budget" in self.tasks:
            for method in self.methods:
                for ratio in self.ratios:
                    label = f"budget · {method} @ {1 - ratio:.0%} · 1/{self.config.budget_factor:g} of full's backward"
                    items.append(WorkItem(label, ("budget", budget_mode(self.config.budget_factor), method, ratio)))
        if "speed" in self.tasks:
            items.append(WorkItem("speed · every backward mode", ("speed", "-", "all", 0.0)))
        if "data_selection" in self.tasks:
            for subset in SUBSETS:
                items.append(WorkItem(f"data_selection · {subset}", ("data_selection", "-", subset, 0.0)))
        return items

    # -- runs --------------------------------------------------------------------------------------------
    def _fresh(self) -> None:
        self.loaded.model.load_state_dict(self.start)

    def _row(
        self, task: str, mode: str, method: str, ratio: float, result: TrainResult, **extra: Any
    ) -> dict[str, Any]:
        evaluation = evaluate(self.loaded.model, self.loaded.tokenizer, self.test, answers=self.config.answers)
        counts = result.counts
        return {
            **self.key(task, mode, method, ratio, f"seed{self.config.seed}"),
            "logprob": evaluation.logprob,
            "eval_tokens": evaluation.tokens,
            "eval_examples": evaluation.examples,
            "accuracy": evaluation.accuracy,
            "answered": evaluation.answered,
            "steps": result.steps,
            "tokens_labelled": counts.labelled,
            "tokens_selected": counts.selected,
            "kept_fraction": counts.selected_fraction,
            "backward_positions": counts.backward,
            "forward_s": result.forward_s,
            "backward_s": result.backward_s,
            "optimizer_s": result.optimizer_s,
            "wall_s": result.wall_s,
            "losses": result.losses,
            "excluded_too_long": self.too_long,
            **extra,
        }

    def run_item(self, item: WorkItem) -> None:
        task, mode, method, ratio = item.args
        key = self.key(task, mode, method, ratio, f"seed{self.config.seed}")
        if self.has(**key):
            return
        self._fresh()
        if task == "speed":
            if any(r["task"] == "speed" for r in self.store.rows()):
                return
            for row in self._speed():
                self.store.append(row)
            return
        if task == "budget":
            row = self._budget(method, ratio)
        elif task == "selective":
            row = self._selective(mode, method, ratio)
        else:
            row = self._data_selection(method)
        self.store.append(row)

    def _speed(self) -> list[dict[str, Any]]:
        """Forward and backward seconds of one training step per backward mode and budget, the modes taking
        turns on the same batches so a busy machine slows them alike; medians over ``SPEED_BATCHES``. The
        selection is ESLM's (a policy's choice does not change the cost; Rho-1 adds one reference forward
        per new example)."""
        import statistics

        from tokensift.methods import build
        from tokensift.training.examples import encode_example, pad_id
        from tokensift.training.finetuning import collate
        from tokensift.training.loss import SelectiveLoss, full_loss
        from tokensift.training.sparse import Context, sparse_step

        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        encoded = [encode_example(tokenizer, e) for e in self.train[: SPEED_BATCHES * self.config.batch_size]]
        cells = [(FULL, "exact", 0.0)] + [
            ("eslm", mode, ratio) for mode in self.config.backward for ratio in self.ratios
        ]
        times: dict[tuple[str, str, float], list[tuple[float, float, int]]] = {cell: [] for cell in cells}
        policies = {cell: build("training", "eslm", ratio=cell[2]) for cell in cells if cell[0] != FULL}
        model.train()
        try:
            for start in range(0, len(encoded), self.config.batch_size):
                ids, mask, labels = collate(encoded[start : start + self.config.batch_size], pad_id(tokenizer))
                for cell in cells:
                    method, mode, ratio = cell
                    began = time.perf_counter()
                    if method == FULL or mode == "exact":
                        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                        loss = (
                            full_loss(logits, labels)
                            if method == FULL
                            else SelectiveLoss(policies[cell])(logits, labels)
                        )
                        positions = int(mask.sum())
                    else:
                        context: Context = "selected" if mode == "sparse" else "labelled"
                        step = sparse_step(model, ids, labels, policies[cell], attention_mask=mask, context=context)
                        loss, positions = step.loss, step.backward_positions
                    forward = time.perf_counter()
                    loss.backward()
                    times[cell].append((forward - began, time.perf_counter() - forward, positions))
                    model.zero_grad(set_to_none=True)
        finally:
            model.eval()
        full_backward = statistics.median(t[1] for t in times[(FULL, "exact", 0.0)])
        rows = []
        for (method, mode, ratio), found in times.items():
            backward = statistics.median(t[1] for t in found)
            rows.append(
                {
                    **self.key("speed", mode, method, ratio, f"seed{self.config.seed}"),
                    "forward_s": statistics.median(t[0] for t in found),
                    "backward_s": backward,
                    "step_s": statistics.median(t[0] + t[1] for t in found),
                    "backward_positions": sum(t[2] for t in found),
                    "backward_speedup": full_backward / backward,
                    "kept_fraction": 1.0 - ratio,
                    "batches": len(found),
                }
            )
        return rows

    def _train(
        self, examples: Sequence[Example], policy: Any, steps: int, backward: str, budget: int | None = None
    ) -> TrainResult:
        return finetune(
            self.loaded.model,
            self.loaded.tokenizer,
            examples,
            policy,
            steps=steps,
            batch_size=self.config.batch_size,
            lr=self.config.lr,
            seed=self.config.seed,
            backward=backward,  # type: ignore[arg-type]
            reference=self.reference,
            max_tokens=self.config.max_tokens,
            backward_budget=budget,
        )

    def _selective(self, mode: str, method: str, ratio: float) -> dict[str, Any]:
        from tokensift.methods import build

        if method == REFERENCE:
            return self._train_reference()
        if method == START:
            return self._row("selective", mode, method, ratio, TrainResult(0, Counts()))
        policy = build("training", "none") if method == FULL else build("training", method, ratio=ratio)
        if policy.needs_reference and self.reference is None:
            self._load_reference()
            self._fresh()
        result = self._train(self.train, policy, self.config.steps, mode)
        return self._row("selective", mode, method, ratio, result)

    def _budget(self, method: str, ratio: float) -> dict[str, Any]:
        """A sparse run whose backward positions are the full run's divided by ``budget_factor``."""
        from tokensift.methods import build

        full = self._full_row()
        budget = max(1, int(full["backward_positions"] / self.config.budget_factor))
        policy = build("training", method, ratio=ratio)
        if policy.needs_reference and self.reference is None:
            self._load_reference()
        self._fresh()
        most = len(self.train) // self.config.batch_size
        result = self._train(self.train, policy, most, "sparse", budget)
        return self._row(
            "budget",
            budget_mode(self.config.budget_factor),
            method,
            ratio,
            result,
            budget_positions=budget,
            budget_factor=self.config.budget_factor,
        )

    def _full_row(self) -> dict[str, Any]:
        """The full-loss run of the ``selective`` task (trained now, and stored, when it is missing)."""
        key = self.key("selective", "exact", FULL, 0.0, f"seed{self.config.seed}")
        found = next((r for r in self.store.rows() if all(r.get(k) == v for k, v in key.items())), None)
        if found is None:
            self._fresh()
            found = self._selective("exact", FULL, 0.0)
            self.store.append(found)
        return found

    def _train_reference(self) -> dict[str, Any]:
        """Rho-1's reference: the paper trains it on curated data; here on GSM8K problems no run trains on
        (the last ones of the shuffled pool), full loss. Kept frozen (its per-token losses are remembered) and
        saved next to the rows, so a resumed run reads it instead of training it again."""
        import torch

        from tokensift.methods import build
        from tokensift.training.reference import Reference

        self._fresh()
        result = self._train(self.reference_train, build("training", "none"), self.config.reference_steps, "exact")
        row = self._row("selective", "exact", REFERENCE, 0.0, result)
        self.reference = Reference(copy.deepcopy(self.loaded.model).eval())
        torch.save(self.loaded.model.state_dict(), self._reference_file())
        return row

    def _reference_file(self) -> Path:
        return self.config.out / f"reference-{self.config.reference_steps}steps-seed{self.config.seed}.pt"

    def _load_reference(self) -> None:
        """The reference trained before (saved), or a new one."""
        import torch

        from tokensift.training.reference import Reference

        if not self._reference_file().exists():
            self._train_reference()
            return
        self.loaded.model.load_state_dict(torch.load(self._reference_file(), weights_only=True))
        self.reference = Reference(copy.deepcopy(self.loaded.model).eval())

    def _data_selection(self, subset: str) -> dict[str, Any]:
        from tokensift.methods import build

        pool = self.train[: self.config.pool]
        count = Budget(keep=self.config.data_keep).tokens(len(pool))
        if subset == "all":
            chosen, scoring_s = pool, 0.0
        elif subset == "random":
            chosen, scoring_s = random.Random(self.config.seed + 1).sample(pool, count), 0.0
        else:
            ranked, scoring_s = self._ranked(pool)
            chosen = [pool[i] for i in ranked[:count]]
        steps = math.ceil(len(chosen) / self.config.batch_size)
        result = self._train(chosen, build("training", "none"), steps, "exact")
        return self._row("data_selection", "-", subset, 0.0, result, rows=len(chosen), scoring_s=scoring_s)

    def _ranked(self, pool: Sequence[Example]) -> tuple[list[int], float]:
        """Pool indices best-first by the scorer (scores kept next to the rows, so a re-run reads them)."""
        from tokensift.methods import build
        from tokensift.training.datascore import score_examples
        from tokensift.training.examples import encode_unconditional

        cache = self.config.out / f"pool_scores_{self.config.scorer}.json"
        if cache.exists():
            stored = json.loads(cache.read_text())
            if stored["pool"] == len(pool):
                return stored["ranked"], stored["seconds"]
        scorer = build("training", self.config.scorer)
        tokenizer = self.loaded.tokenizer
        start, values = time.perf_counter(), []
        for begin in range(0, len(pool), 8):
            chunk = pool[begin : begin + 8]
            encoded = [(encode_example(tokenizer, e), encode_unconditional(tokenizer, e)) for e in chunk]
            values += [scored.value for scored, _ in score_examples(self.loaded.model, tokenizer, encoded, scorer)]
        seconds = time.perf_counter() - start
        ranked = sorted(range(len(pool)), key=lambda i: (-values[i], i))
        cache.write_text(json.dumps({"pool": len(pool), "ranked": ranked, "scores": values, "seconds": seconds}))
        return ranked, seconds

    # -- report ------------------------------------------------------------------------------------------
    def notes(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        c = self.config
        found = [
            f"{c.steps} steps × batch {c.batch_size} (selective), AdamW lr {c.lr:g}; held-out: the first "
            f"{self.samples} GSM8K test problems; training problems over {c.max_tokens} tokens left out"
            + (f" ({rows[0]['excluded_too_long']:,})" if rows else "")
        ]
        found.append(
            "logprob = mean log-probability per token of the reference solution (nats, higher is better); "
            "backward_s and wall_s are measured seconds in one process on this machine's CPU"
        )
        return found

    def sections(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        from tokensift.training.report import training_sections

        return training_sections(self, rows)
