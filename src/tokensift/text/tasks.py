"""Benchmark tasks for prompt compression, built from the evaluation data (never copied into the repo).

* ``nq_qa`` — NaturalQuestions-Open (Liu et al., 2023, "Lost in the Middle" data): the gold passage among
  distractors (other questions' gold passages), the question and its gold answers.
* ``gsm8k_cot`` — the 8-shot chain-of-thought prompt (``prompt_hardest.txt``, chain-of-thought-hub) and
  GSM8K test questions with their reference solutions (Cobbe et al., 2021).
* ``rate_adherence`` — Paul Graham essays cut to lengths from 50 to 8,000 tokens.
* ``wiki_summary`` — a summary-style long-document task: a WikiText-2 article's body (up to
  ``SUMMARY_BODY_TOKENS``) is compressed, and the reader is scored on the article's lead paragraph — the
  human-written summary Wikipedia puts first — read after it (Merity et al., 2016, arXiv:1609.07843).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokensift.bench import data as files
from tokensift.errors import ParameterError

QA_INSTRUCTION = (
    "Write a high-quality answer for the given question using only the provided search results "
    "(some of which might be irrelevant)."
)
ADHERENCE_LENGTHS = (50, 100, 200, 500, 1000, 2000, 4000, 8000)
ADHERENCE_QUESTION = "What is the main argument of the essay?"
SUMMARY_BODY_TOKENS = 600
SUMMARY_LEAD = "\n\nSummary of the article above:\n"
_WIKI_JOINS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" . ", ". "), (" ; ", "; "),
               (" : ", ": "), (" 's ", "'s "), ("( ", "("), (" )", ")"))  # fmt: skip


@dataclass
class Instance:
    """One prompt to compress; ``probes`` are what the reader is scored on (one row each)."""

    task: str
    sample_id: str
    prompt: str | list[str]
    question: str | None
    probes: list[dict[str, Any]] = field(default_factory=list)


def nq_instances(data: Path, samples: int, distractors: int, seed: int = 0) -> list[Instance]:
    """Gold passage at a random position among ``distractors`` other questions' gold passages.

    Each question draws its distractors from its own seeded generator, so a run with fewer samples uses
    exactly the first instances of a larger one."""
    records = files.nq_open(data)
    if samples > len(records):
        raise ParameterError(f"NQ-Open has {len(records)} questions; asked for {samples} samples", option="samples")
    chosen = random.Random(seed).sample(range(len(records)), samples)
    instances = []
    for index in chosen:
        record = records[index]
        rng = random.Random(f"{seed}-{index}")
        others = rng.sample([i for i in range(len(records)) if i != index], distractors)
        passages = [records[i]["ctxs"][0] for i in others]
        passages.insert(rng.randrange(distractors + 1), record["ctxs"][0])
        documents = [f"Document [{k + 1}](Title: {p['title']}) {p['text']}" for k, p in enumerate(passages)]
        probe = {"answers": record["answers"], "question": record["question"]}
        instances.append(Instance("nq_qa", f"nq{index}", documents, record["question"], [probe]))
    return instances


def qa_reader_prompt(documents: list[str], question: str) -> str:
    """The reader's prompt around the (compressed) documents (Lost in the Middle's QA template)."""
    return f"{QA_INSTRUCTION}\n\n" + "\n".join(documents) + f"\n\nQuestion: {question}\nAnswer:"


def _solution(answer: str) -> str:
    """A GSM8K reference answer in the demonstrations' format (no calculator marks, 'The answer is N')."""
    body, _, final = answer.partition("####")
    return re.sub(r"<<[^>]*>>", "", body).strip() + f"\nThe answer is {final.strip()}"


def gsm8k_instance(data: Path, samples: int) -> Instance:
    """The 8-shot CoT prompt, with the first ``samples`` test questions and solutions as probes."""
    prompt = files.gsm8k_cot_prompt(data)
    probes = []
    for number, record in enumerate(files.gsm8k(data, "test")[:samples]):
        probes.append(
            {
                "id": f"gsm{number}",
                "lead": f"\n\nQuestion: {record['question']}\nLet's think step by step\n",
                "target": _solution(record["answer"]),
            }
        )
    return Instance("gsm8k_cot", "prompt_hardest", prompt, None, probes)


def adherence_instances(data: Path, tokenizer: Any, lengths: Sequence[int] = ADHERENCE_LENGTHS) -> list[Instance]:
    """Essay text cut (at a word boundary) to about each length in tokens of ``tokenizer``."""
    corpus = "\n\n".join(essay.strip() for essay in files.essays(data))
    encoding = tokenizer(corpus, return_offsets_mapping=True, add_special_tokens=False)
    offsets = encoding["offset_mapping"]
    instances = []
    for length in lengths:
        end = offsets[min(length, len(offsets)) - 1][1]
        text = corpus[:end]
        cut = max(text.rfind(" "), text.rfind("\n"))
        instances.append(
            Instance("rate_adherence", f"len{length}", text[:cut] if cut > 0 else text, ADHERENCE_QUESTION)
        )
    return instances


def _detokenize(line: str) -> str:
    """WikiText's spaced punctuation joined back ("1 @,@ 000" -> "1,000", "word ," -> "word,")."""
    text = " " + line.strip() + " "
    for spaced, joined in _WIKI_JOINS:
        text = text.replace(spaced, joined)
    return text.strip().rstrip(" .") + ("." if text.strip().endswith(".") else "")


def wiki_summary_instances(data: Path, samples: int, tokenizer: Any) -> list[Instance]:
    """WikiText-2 articles with a lead and a body: the body (whole paragraphs, up to SUMMARY_BODY_TOKENS tokens of
    ``tokenizer``) is the prompt, the lead paragraph the probe's target; articles in file order."""
    articles: list[tuple[str, list[str], list[str]]] = []
    for line in files.wikitext(data).replace("\r\n", "\n").split("\n"):
        stripped = line.strip()
        if re.fullmatch(r"= [^=].* =", stripped):
            articles.append((stripped.strip("= ").strip(), [], []))
        elif stripped.startswith("= =") or not stripped or not articles:
            if stripped.startswith("= =") and articles:
                articles[-1][2].append("")  # a section starts: the lead is over
            continue
        else:
            _, lead, body = articles[-1]
            (body if body else lead).append(_detokenize(stripped))
    found: list[Instance] = []
    for _title, lead, body in articles:
        paragraphs = [p for p in body if p]
        if not lead or len(paragraphs) < 3:
            continue
        kept: list[str] = []
        for paragraph in paragraphs:
            if kept and len(tokenizer("\n\n".join([*kept, paragraph]))["input_ids"]) > SUMMARY_BODY_TOKENS:
                break
            kept.append(paragraph)
        probe = {"id": f"wiki-{len(found)}", "lead": SUMMARY_LEAD, "target": lead[0]}
        found.append(Instance("wiki_summary", f"wiki-{len(found)}", "\n\n".join(kept), None, [probe]))
    if samples > len(found):
        raise ParameterError(f"WikiText-2 has {len(found)} articles with a lead and a body; asked for {samples}")
    return found[:samples]
