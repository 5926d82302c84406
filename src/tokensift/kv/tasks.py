"""Benchmark tasks for KV compression, built from the shared evaluation data (see ``SOURCES.md`` there).

* ``niah``: a needle ("The special magic number is 4817263.") at a random depth of a Paul Graham essay
  haystack (gkamradt/LLMTest_NeedleInAHaystack); ``niah_multikey``: RULER-style (Hsieh et al., 2024)
  with three distractor needles for other keys; ``niah_multivalue``: one key, three values, all asked.
* ``kv_retrieval``: lost-in-the-middle JSON key-value retrieval (Liu et al., 2023), ``pairs`` pairs.
* ``nq_qa``: a NaturalQuestions-Open gold passage among the gold passages of other questions.
* ``fidelity``: a WikiText-2 context and the next 64 tokens (distribution fidelity, perplexity).
* ``passkey``: Landmark Attention's long-context probe (Mohtashami & Jaggi, 2023, arXiv:2305.16300): a
  5-digit pass key once among repeated filler sentences, ``length`` tokens in all.

Only the standard library and a tokenizer are needed, so the kvpress peer builds the very same samples
in its own environment. Every sample is a pure function of ``(task, index, seed, length)``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokensift.bench import data as files
from tokensift.errors import ParameterError

TASKS = ("niah", "niah_multikey", "niah_multivalue", "kv_retrieval", "nq_qa", "fidelity", "passkey")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
"""Landmark Attention's filler block (the task's standard text)."""
KEYS = ["apple", "river", "violet", "compass", "lantern", "harbor", "meadow", "falcon", "granite", "orchid"]


@dataclass
class Sample:
    """One task instance: the context to compress, the question kept out of it, and the gold answers."""

    task: str
    sample_id: str
    context: str
    question: str = ""
    answer_prefix: str = ""
    answers: list[str] = field(default_factory=list)
    match_all: bool = False
    max_new_tokens: int = 16
    continuation: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _haystack(data: Path, rng: random.Random, tokenizer: Any, length: int) -> str:
    """About ``length`` tokens of essays, starting at a random essay."""
    essays = files.essays(data)
    order = essays[rng.randrange(len(essays)) :] + essays
    text = ""
    for essay in order:
        text += essay.strip() + "\n\n"
        if len(text) > 6 * length:
            break
    ids = tokenizer(text, add_special_tokens=False).input_ids[:length]
    return str(tokenizer.decode(ids))


def _insert(haystack: str, needles: list[str], rng: random.Random) -> tuple[str, list[float]]:
    """Put each needle after a sentence end at a random depth in (0.05, 0.95); returns text and depths."""
    ends = [m.end() for m in re.finditer(r"[.!?]\s", haystack)] or [len(haystack)]
    text, depths = haystack, []
    for needle in needles:
        depth = rng.uniform(0.05, 0.95)
        cut = min(ends, key=lambda e: abs(e - depth * len(haystack)))
        text = text[:cut] + needle + " " + text[cut:]
        ends = [e + len(needle) + 1 if e >= cut else e for e in ends]
        depths.append(depth)
    return text, depths


def _number(rng: random.Random) -> str:
    return str(rng.randrange(1_000_000, 10_000_000))


def niah(data: Path, tokenizer: Any, index: int, seed: int, length: int, variant: str = "single") -> Sample:
    """Needle in a haystack; ``variant`` single, multikey (3 distractor keys) or multivalue (3 values)."""
    rng = random.Random(f"niah-{variant}-{seed}-{index}-{length}")
    haystack = _haystack(data, rng, tokenizer, length)
    keys = rng.sample(KEYS, 4)
    task = "niah" if variant == "single" else f"niah_{variant}"
    if variant == "single":
        value = _number(rng)
        text, depths = _insert(haystack, [f"The special magic number is {value}."], rng)
        return Sample(
            task,
            f"{task}-{length}-{index}",
            text,
            question="What is the special magic number mentioned in the text?",
            answer_prefix="The special magic number mentioned in the text is",
            answers=[value],
            max_new_tokens=10,
            meta={"length": length, "depth": round(depths[0], 3)},
        )
    if variant == "multikey":
        values = [_number(rng) for _ in keys]
        needles = [f"One of the special magic numbers for {k} is: {v}." for k, v in zip(keys, values, strict=True)]
        text, depths = _insert(haystack, needles, rng)
        return Sample(
            task,
            f"{task}-{length}-{index}",
            text,
            question=f"What is the special magic number for {keys[0]} mentioned in the text?",
            answer_prefix=f"The special magic number for {keys[0]} mentioned in the text is",
            answers=[values[0]],
            max_new_tokens=10,
            meta={"length": length, "depth": round(depths[0], 3)},
        )
    if variant != "multivalue":
        raise ParameterError(f"unknown niah variant {variant!r}")
    values = [_number(rng) for _ in range(3)]
    text, depths = _insert(haystack, [f"One of the special magic numbers for {keys[0]} is: {v}." for v in values], rng)
    return Sample(
        task,
        f"{task}-{length}-{index}",
        text,
        question=f"What are all the special magic numbers for {keys[0]} mentioned in the text?",
        answer_prefix=f"The special magic numbers for {keys[0]} mentioned in the text are",
        answers=values,
        match_all=True,
        max_new_tokens=30,
        meta={"length": length},
    )


def kv_retrieval(data: Path, index: int, seed: int, pairs: int = 10) -> Sample:
    """JSON key-value retrieval with ``pairs`` pairs, the asked key at a random position."""
    records = files.kv_retrieval(data)
    rng = random.Random(f"kv-{seed}-{index}")
    record = records[rng.randrange(len(records))]
    key, value = record["key"], record["value"]
    others = [kv for kv in record["ordered_kv_records"] if kv[0] != key]
    chosen = rng.sample(others, pairs - 1)
    chosen.insert(rng.randrange(pairs), [key, value])
    body = "{" + ", ".join(f'"{k}": "{v}"' for k, v in chosen) + "}"
    context = f"Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n{body}"
    return Sample(
        "kv_retrieval",
        f"kv_retrieval-{pairs}-{index}",
        context,
        question=f'Key: "{key}"',
        answer_prefix="Corresponding value:",
        answers=[value],
        max_new_tokens=48,  # a UUID is 36 characters: 35-36 tokens with the SmolLM2 and Gemma-3 tokenizers
        meta={"pairs": pairs},
    )


def nq_qa(data: Path, index: int, seed: int, passages: int = 8) -> Sample:
    """The gold passage of one NaturalQuestions-Open question among ``passages - 1`` other questions' passages."""
    questions = files.nq_open(data)
    rng = random.Random(f"nq-{seed}-{index}")
    picked = rng.sample(range(len(questions)), passages)
    records = [questions[i] for i in picked]
    gold = records[0]
    docs = [r["ctxs"][0] for r in records]
    position = rng.randrange(passages)
    docs.insert(position, docs.pop(0))
    results = "\n".join(f"Document [{i + 1}](Title: {d['title']}) {d['text']}" for i, d in enumerate(docs))
    context = (
        "Write a high-quality answer for the given question using only the provided search results "
        f"(some of which might be irrelevant).\n\n{results}"
    )
    return Sample(
        "nq_qa",
        f"nq_qa-{index}",
        context,
        question=f"Question: {gold['question']}",
        answer_prefix="Answer:",
        answers=list(gold["answers"]),
        max_new_tokens=16,
        meta={"gold_position": position},
    )


def fidelity(data: Path, tokenizer: Any, index: int, seed: int, length: int, follow: int = 64) -> Sample:
    """``length`` tokens of WikiText-2 and the ``follow + 1`` tokens after them."""
    text = files.wikitext(data).replace("\r\n", "\n")
    rng = random.Random(f"fidelity-{seed}-{index}")
    start = rng.randrange(0, len(text) - 8 * (length + follow))
    ids = tokenizer(text[start : start + 8 * (length + follow)], add_special_tokens=False).input_ids
    context = tokenizer.decode(ids[1 : length + 1])  # skip a possibly cut first token
    continuation = tokenizer.decode(ids[length + 1 : length + follow + 2])
    return Sample("fidelity", f"fidelity-{length}-{index}", context, continuation=continuation, meta={"length": length})


def passkey(tokenizer: Any, index: int, seed: int, length: int) -> Sample:
    """A 5-digit pass key stated once at a random depth among repeated filler blocks, about ``length`` tokens."""
    rng = random.Random(f"passkey-{seed}-{index}-{length}")
    key = str(rng.randrange(10_000, 100_000))
    intro = (
        "Somewhere in the long text below there is one important piece of information. "
        "Find it and remember it: you will be asked about it."
    )
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    block = len(tokenizer(" " + FILLER, add_special_tokens=False).input_ids)
    spare = length - len(tokenizer(intro + " " + needle, add_special_tokens=False).input_ids)
    blocks = max(2, spare // block)
    depth = rng.uniform(0.05, 0.95)
    before = round(depth * blocks)
    parts = [intro, *[FILLER] * before, needle, *[FILLER] * (blocks - before)]
    return Sample(
        "passkey",
        f"passkey-{length}-{index}",
        " ".join(parts),
        question="What is the pass key?",
        answer_prefix="The pass key is",
        answers=[key],
        max_new_tokens=8,
        meta={"length": length, "depth": round(depth, 3)},
    )


def build(task: str, data: Path, tokenizer: Any, index: int, seed: int, length: int) -> Sample:
    """Sample ``index`` of ``task`` (NIAH, passkey and fidelity at ``length`` context tokens)."""
    if task == "niah":
        return niah(data, tokenizer, index, seed, length)
    if task in ("niah_multikey", "niah_multivalue"):
        return niah(data, tokenizer, index, seed, length, task.removeprefix("niah_"))
    if task == "kv_retrieval":
        return kv_retrieval(data, index, seed)
    if task == "nq_qa":
        return nq_qa(data, index, seed)
    if task == "fidelity":
        return fidelity(data, tokenizer, index, seed, length)
    if task == "passkey":
        return passkey(tokenizer, index, seed, length)
    raise ParameterError(f"unknown kv task {task!r}; tasks: {', '.join(TASKS)}")


def leading_ids(tokenizer: Any, text: str) -> list[int]:
    """The special tokens ``tokenizer`` puts before a text by default (Gemma's ``<bos>``; none for SmolLM2),
    unless ``text`` already starts with them (a chat template that writes them itself)."""
    plain = list(tokenizer("a", add_special_tokens=False).input_ids)
    marked = list(tokenizer("a", add_special_tokens=True).input_ids)
    if not plain or marked[len(marked) - len(plain) :] != plain:
        return []
    prefix = marked[: len(marked) - len(plain)]
    if prefix and text.startswith(tokenizer.decode(prefix)):
        return []
    return prefix


def split_prompt(tokenizer: Any, sample: Sample, query_aware: bool) -> tuple[list[int], list[int]]:
    """Token ids of the part to compress and of the part fed afterwards.

    The prompt is the model's chat template (when it has one) around ``context + question``, then the
    answer prefix, after the tokenizer's leading special tokens (:func:`leading_ids`). Query-agnostic: only
    the context is compressed; query-aware: context and question.
    """
    if sample.task == "fidelity":
        ids = tokenizer(sample.context, add_special_tokens=False).input_ids
        return list(ids), list(tokenizer(sample.continuation, add_special_tokens=False).input_ids)
    user = f"{sample.context}\n\n{sample.question}"
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    else:
        rendered = user + "\n"
    rendered += sample.answer_prefix
    anchor = user if query_aware else sample.context
    cut = rendered.index(anchor) + len(anchor)
    head = leading_ids(tokenizer, rendered) + list(tokenizer(rendered[:cut], add_special_tokens=False).input_ids)
    tail = tokenizer(rendered[cut:], add_special_tokens=False).input_ids
    return head, list(tail)


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def string_match(output: str, sample: Sample) -> tuple[bool, float]:
    """(all/any gold answers found in the output, share of gold answers found), case- and punctuation-blind."""
    found = [_normalize(a) in _normalize(output) for a in sample.answers]
    share = sum(found) / len(found) if found else 0.0
    return (all(found) if sample.match_all else any(found)), share
