"""Training the ``lingua2`` head: keep/drop labels on NaturalQuestions passages, a frozen MiniLM, a tiny head.

Labels (``labels``), each justified by what a compressed context is for — answering questions about it:

* ``answer`` — a word is kept when it lies inside an occurrence of one of the question's gold answers in
  its gold passage (the reader needs exactly these words; dropping one loses the answer);
* ``question`` — ``answer`` plus the passage's words that the question itself uses (the words a question
  about the passage points at, which a question-aware compressor keeps).

The head never sees the question: it learns which words *any* question is likely to need — names, dates,
numbers, the terms they attach to. Questions used by ``tokensift bench text`` (the first 300 NQ samples and
their distractor passages, at any distractor count up to 3) are never trained on; ``dev`` held-out
questions measure gold retention at rate 0.5 with two distractors, with random word dropping beside.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from tokensift.bench import data as files
from tokensift.errors import ParameterError
from tokensift.text.lexical import terms
from tokensift.text.lingua2 import ENCODER, LAYERS, KeepHead, save_head, word_features
from tokensift.text.units import Protect, segment

Labels = Literal["answer", "question"]
BENCH_SAMPLES = (50, 100, 200, 300)


def passage_text(ctx: dict[str, Any], number: int = 1) -> str:
    """A passage as ``tokensift bench text`` shows it to a compressor."""
    return f"Document [{number}](Title: {ctx['title']}) {ctx['text']}"


def bench_indices(data: Path) -> set[int]:
    """NQ records the text benchmark reads (questions and distractors), to keep out of training."""
    from tokensift.text.tasks import nq_instances

    records = files.nq_open(data)
    by_text = {r["ctxs"][0]["text"]: k for k, r in enumerate(records)}
    used: set[int] = set()
    for samples in BENCH_SAMPLES:
        for instance in nq_instances(data, min(samples, len(records)), 3):
            used.add(int(instance.sample_id[2:]))
            for document in instance.prompt:
                body = document.split(") ", 1)[1] if ") " in document else document
                if body in by_text:
                    used.add(by_text[body])
    return used


def word_labels(text: str, answers: Sequence[str], question: str, kind: Labels) -> tuple[list[str], list[float]]:
    """The passage's unit texts and a 0/1 label per unit (non-word units get 0 and are not trained on: -1)."""
    seg = segment([text], Protect(code=False, urls=False, tables=False, markers=False, json=False))
    spans = []
    lowered = text.lower()
    for answer in answers:
        needle = answer.strip().lower()
        if needle:
            spans += [(m.start(), m.end()) for m in re.finditer(re.escape(needle), lowered)]
    asked = set(terms(question)) if kind == "question" else set()
    labels = []
    for unit in seg.units:
        if not unit.droppable:
            labels.append(-1.0)
            continue
        inside = any(unit.start < end and start < unit.end for start, end in spans)
        core = terms(unit.text)
        labels.append(1.0 if inside or (core and core[0] in asked) else 0.0)
    return [u.text for u in seg.units], labels


@dataclass
class Split:
    train: list[int]
    dev: list[int]


def split(data: Path, dev: int, seed: int = 0) -> Split:
    """Held-out dev questions and the training questions, both disjoint from the benchmark's."""
    records = files.nq_open(data)
    pool = sorted(set(range(len(records))) - bench_indices(data))
    if dev >= len(pool):
        raise ParameterError(f"only {len(pool)} questions are free of the benchmark; dev must be fewer", option="dev")
    random.Random(seed).shuffle(pool)
    return Split(sorted(pool[dev:]), sorted(pool[:dev]))


def features(
    data: Path, indices: Sequence[int], kind: Labels, encoder: Any, tokenizer: Any, progress: Callable[[int], None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Word features and labels of the gold passages of ``indices`` (non-word units left out)."""
    records = files.nq_open(data)
    rows, targets = [], []
    for k, index in enumerate(indices):
        record = records[index]
        texts, labels = word_labels(passage_text(record["ctxs"][0]), record["answers"], record["question"], kind)
        found = word_features(encoder, tokenizer, texts)
        keep = torch.tensor(labels) >= 0
        rows.append(found[keep])
        targets.append(torch.tensor(labels)[keep])
        progress(k + 1)
    return torch.cat(rows), torch.cat(targets)


def fit(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, log: Callable[[dict[str, Any]], None]) -> KeepHead:
    """The head by Adam on class-balanced binary cross-entropy, in minibatches of 512 words."""
    torch.manual_seed(seed)
    head = KeepHead(int(x.shape[1]))
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-2)
    positive = float(y.mean())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - positive) / max(positive, 1e-6)))
    for epoch in range(epochs):
        order = torch.randperm(len(y))
        total = 0.0
        for start in range(0, len(y), 512):
            batch = order[start : start + 512]
            loss = loss_fn(head(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        log({"epoch": epoch + 1, "loss": total / len(y)})
    head.eval()
    return head


def dev_retention(
    data: Path, dev: Sequence[int], weights: Path, keep: float = 0.5, distractors: int = 2
) -> dict[str, float]:
    """Gold answer retained at ``keep`` on dev questions among ``distractors`` other dev passages."""
    from tokensift.text.api import Compressor

    records = files.nq_open(data)
    compressors = {
        "lingua2": Compressor("lingua2", options={"weights": str(weights)}),
        "random": Compressor("random"),
    }
    found = {name: 0 for name in compressors}
    for index in dev:
        rng = random.Random(f"dev-{index}")
        others = rng.sample([i for i in dev if i != index], distractors)
        passages = [records[i]["ctxs"][0] for i in others]
        passages.insert(rng.randrange(distractors + 1), records[index]["ctxs"][0])
        documents = [passage_text(p, k + 1) for k, p in enumerate(passages)]
        for name, compressor in compressors.items():
            out = compressor.compress(compressor.prepare(documents), keep=keep).text
            found[name] += any(a.lower() in out.lower() for a in records[index]["answers"])
    return {name: count / len(dev) for name, count in found.items()}


def train(
    data: Path,
    out: Path,
    *,
    labels: Labels = "answer",
    dev: int = 200,
    epochs: int = 8,
    seed: int = 0,
    log: Callable[[dict[str, Any]], None] = print,
) -> dict[str, Any]:
    """Train a head, save it to ``out`` with its metadata, and return the metadata (dev scores included)."""
    from tokensift.models import load_model

    if labels not in ("answer", "question"):
        raise ParameterError(f"labels must be answer or question, got {labels!r}", option="labels")
    start = time.perf_counter()
    parts = split(data, dev, seed)
    loaded = load_model(ENCODER)
    log({"stage": "split", "train_questions": len(parts.train), "dev_questions": len(parts.dev)})

    def progress(done: int) -> None:
        if done % 200 == 0 or done == len(parts.train):
            log(
                {
                    "stage": "features",
                    "passages": done,
                    "of": len(parts.train),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )

    x, y = features(data, parts.train, labels, loaded.model, loaded.tokenizer, progress)
    log({"stage": "data", "words": len(y), "kept_label_fraction": round(float(y.mean()), 4)})
    head = fit(x, y, epochs, seed, log)
    meta: dict[str, Any] = {
        "encoder": ENCODER,
        "layers": list(LAYERS),
        "labels": labels,
        "train_questions": len(parts.train),
        "train_words": len(y),
        "epochs": epochs,
        "seed": seed,
    }
    save_head(head, out, meta)
    meta["dev_gold_retained_at_keep_0.5"] = dev_retention(data, parts.dev, out)
    meta["dev_questions"] = len(parts.dev)
    meta["seconds"] = round(time.perf_counter() - start, 1)
    save_head(head, out, meta)
    log({"stage": "done", **meta})
    return meta


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tokensift.text.lingua2_train DATA OUT [--labels answer|question] [--dev N] [--epochs N]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Train the lingua2 keep/drop head on NQ passages.")
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--labels", default="answer", choices=["answer", "question"])
    parser.add_argument("--dev", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(
        args.data,
        args.out,
        labels=args.labels,
        dev=args.dev,
        epochs=args.epochs,
        seed=args.seed,
        log=lambda record: print(json.dumps(record), flush=True),
    )


if __name__ == "__main__":
    main()
