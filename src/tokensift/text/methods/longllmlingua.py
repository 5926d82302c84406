"""``longllmlingua``: Jiang et al., 2024, "LongLLMLingua: Accelerating and Enhancing LLMs in Long Context
Scenarios via Prompt Compression" (ACL, arXiv:2310.06839).

* **Question-aware coarse ranking.** Each document ``k`` is scored by the perplexity of the question
  (followed by a fixed restrictive sentence) *given* the document, ``-1/N sum log p(q_i | doc_k)``;
  documents that make the question likely rank first and are kept until they hold ``coarse_factor``
  times the budget.
* **Contrastive perplexity for tokens.** A token's value is its surprisal without the question minus
  its surprisal with the question read first: tokens the question makes predictable matter to it.
* **Dynamic compression ratios.** Kept document ``i`` of ``K`` (by rank) gets the rate
  ``tau + dynamic_ratio * (1 - 2 i / (K - 1))``, clipped to [0, 1]: better documents keep more.
* **Reordering** (optional): documents in the output are sorted by rank.

Without a question, documents rank by their own perplexity and tokens by plain surprisal (LLMLingua's
behaviour). Subsequence recovery (mapping a model's answer back to the original) is out of scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.registry import Paper, option, register
from tokensift.scores.lm import next_token_scores
from tokensift.select import knapsack_select
from tokensift.text.budget import Selection
from tokensift.text.methods.base import Job, Prepared, TextMethod
from tokensift.text.methods.llmlingua import keep_blocks
from tokensift.text.scoring import Scorer, TokenMap, map_tokens
from tokensift.text.units import blocks

RESTRICT = " We can get the answer to this question in the given documents."


@torch.no_grad()
def question_perplexity(scorer: Scorer, document: Tensor, question: Tensor) -> float:
    """Mean surprisal of the ``question`` tokens read after ``document`` (its tail, if it is too long)."""
    context = int(getattr(scorer.model.config, "max_position_embeddings", 0) or 0)
    head = [] if scorer.prefix_id is None else [scorer.prefix_id]
    room = max(0, context - len(head) - int(question.numel())) if context else int(document.numel())
    tail_of_document = document[max(0, int(document.numel()) - room) :]
    ids = torch.cat([torch.tensor(head, dtype=torch.long), tail_of_document, question])
    tail = int(question.numel()) + 1
    out = scorer.model(ids[None].to(scorer.device), use_cache=False, logits_to_keep=tail)
    logits = out.logits[0].float().cpu()
    surprisal, _ = next_token_scores(logits[-tail:], ids[-tail:])
    return float(surprisal[1:].mean())


def block_tokens(tokens: TokenMap, found: Sequence[Sequence[int]]) -> list[Tensor]:
    """The scoring-token ids of every block."""
    owner = {unit: k for k, block in enumerate(found) for unit in block}
    picked: list[list[int]] = [[] for _ in found]
    for token_id, unit in zip(tokens.ids.tolist(), tokens.unit_of_token, strict=True):
        if unit is not None:
            picked[owner[unit]].append(token_id)
    return [torch.tensor(p, dtype=torch.long) for p in picked]


@register
@dataclass
class LongLLMLinguaMethod(TextMethod):
    """Question-aware ranking, contrastive token values, dynamic per-document rates, optional reordering."""

    name: ClassVar[str] = "longllmlingua"
    paper: ClassVar[Paper] = Paper(
        "Jiang et al., 2024",
        "LongLLMLingua: Accelerating and Enhancing LLMs in Long Context Scenarios via Prompt Compression",
        arxiv="2310.06839",
    )
    summary: ClassVar[str] = "question-aware document ranking, contrastive perplexity, dynamic per-document rates"

    coarse_factor: float = option(2.0, low=1.0)
    dynamic_ratio: float = option(0.3, low=0.0, high=1.0)
    reorder: bool = False

    def prepare(self, job: Job) -> Prepared:
        scorer, segmented = job.model(), job.segmented
        found = blocks(segmented, "documents-or-paragraphs")
        tokens = map_tokens(segmented, scorer)
        plain = scorer.surprisal(tokens.ids)
        n = len(segmented.units)
        if job.question:
            asked = scorer.encode("\n\n" + job.question + RESTRICT)[0]
            docs = block_tokens(tokens, found)
            rank = [question_perplexity(scorer, d, asked) for d in docs]
            order = sorted(range(len(found)), key=lambda k: rank[k])
            conditioned = scorer.surprisal(tokens.ids, condition=scorer.encode(job.question + "\n\n")[0])
            token_values = plain - conditioned
        else:
            sums, counts = tokens.unit_sums(plain, n), tokens.unit_sums(torch.ones_like(plain), n)
            ppl = [sum(sums[i] for i in b) / max(1.0, sum(counts[i] for i in b)) for b in found]
            order = sorted(range(len(found)), key=lambda k: -ppl[k])
            token_values = plain
        return Prepared(tokens.unit_sums(token_values, n), [], {"blocks": found, "order": order})

    def choose(self, job: Job, prepared: Prepared, budget: int) -> Selection:
        fitter, segmented = job.fitter, job.segmented
        found: list[list[int]] = prepared.state["blocks"]
        order: list[int] = prepared.state["order"]
        kept = keep_blocks(order, found, fitter, budget, self.coarse_factor)
        ranked = [k for k in order if k in kept]
        words = {k: [i for i in found[k] if segmented.units[i].droppable and fitter.permits(i)] for k in ranked}
        costs = {k: sum(fitter.costs[i] for i in words[k]) for k in ranked}
        fixed_cost = sum(c for c, f in zip(fitter.costs, fitter.fixed, strict=True) if f)
        room = max(0, budget - fixed_cost)
        shares = self._document_budgets(ranked, costs, room)
        keep = [False] * len(segmented.units)
        for k in ranked:
            chosen = knapsack_select(
                [prepared.values[i] for i in words[k]], [fitter.costs[i] for i in words[k]], shares[k]
            )
            for j in chosen:
                keep[words[k][j]] = True
        items = [[i] for k in ranked for i in words[k]]
        selection = fitter.select(items, prepared.values, budget, initial=keep)
        if self.reorder and len(segmented.parts) > 1:
            selection.order = ranked + [k for k in range(len(found)) if k not in kept]
        return selection

    def _document_budgets(self, ranked: list[int], costs: dict[int, int], room: int) -> dict[int, int]:
        """Per-document token budgets from the dynamic rates, scaled to sum to ``room``."""
        total = sum(costs.values())
        if not ranked or total == 0:
            return dict.fromkeys(ranked, 0)
        tau = min(1.0, room / total)
        last = max(1, len(ranked) - 1)
        rates = {k: min(1.0, max(0.0, tau + self.dynamic_ratio * (1 - 2 * i / last))) for i, k in enumerate(ranked)}
        raw = {k: rates[k] * costs[k] for k in ranked}
        scale = room / max(1e-9, sum(raw.values()))
        return {k: min(costs[k], round(raw[k] * scale)) for k in ranked}
