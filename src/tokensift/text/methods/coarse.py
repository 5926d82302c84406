"""``coarse``: coarse-to-fine budgets around any text method — whole blocks first, then words inside them.

LLMLingua's budget controller (Jiang et al., 2023, arXiv:2310.05736) keeps whole demonstrations before it
compresses tokens, and LongLLMLingua (arXiv:2310.06839) ranks documents by the question first; both
leave far more of what matters than dropping words everywhere. ``coarse`` does that for every method:

1. the input is cut into blocks — its documents, else its paragraphs, else its sentences (``unit``);
2. the blocks are ranked (``rank``): by the question (the LM's perplexity of the question after the block,
   as LongLLMLingua; TF-IDF cosine when the wrapped method has no LM), by LexRank centrality (Erkan &
   Radev, 2004, arXiv:1109.2128; the default without a question), by the wrapped method's own mean value
   per token, or by perplexity. On the 8-shot GSM8K prompt at keep 0.5 (30 test solutions, SmolLM2 reader)
   ``coarse:lingua2`` lost 0.38 nats per solution with LexRank against 6.2 with lingua2's own values;
3. blocks are kept whole in rank order until they hold ``coarse_factor`` times the budget; the rest go
   (with the default of 1 the blocks nearly fill the budget, as LLMLingua's controller keeps
   demonstrations up to the budget plus a small margin);
4. the wrapped method chooses words inside the kept blocks, under the same exact budget (the fitter's
   repair holds over both levels, so the output never exceeds the budget); when whole units inside the
   kept blocks cannot fill it, the best words of the other blocks top it up, so the budget is met.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from tokensift.registry import Paper, option, register
from tokensift.text.budget import Selection
from tokensift.text.lexical import lexrank, relevance
from tokensift.text.methods.base import Job, Prepared, TextMethod
from tokensift.text.methods.lingua2 import Lingua2Method
from tokensift.text.methods.llmlingua import keep_blocks
from tokensift.text.methods.longllmlingua import RESTRICT, block_tokens, question_perplexity
from tokensift.text.scoring import map_tokens
from tokensift.text.units import BlockLevel, blocks

Rank = Literal["auto", "question", "own", "lexrank", "perplexity"]


@register
@dataclass
class CoarseToFine(TextMethod):
    """Blocks ranked and kept whole up to ``coarse_factor`` x the budget; the wrapped method picks words inside."""

    name: ClassVar[str] = "coarse"
    paper: ClassVar[Paper] = Paper(
        "Jiang et al., 2023",
        "LLMLingua: Compressing Prompts for Accelerated Inference of Large Language Models",
        arxiv="2310.05736",
    )
    summary: ClassVar[str] = "coarse-to-fine: rank documents/paragraphs/sentences, keep whole, then the wrapped method"

    press: TextMethod = field(default_factory=Lingua2Method)
    unit: BlockLevel = "auto"
    rank: Rank = "auto"
    coarse_factor: float = option(1.0, low=1.0)

    def load(self) -> None:
        self.press.load()

    def uses_model(self) -> bool:
        return self.press.uses_model() or self.rank == "perplexity"

    def prepare(self, job: Job) -> Prepared:
        inner = self.press.prepare(job)
        found = blocks(job.segmented, self.unit)
        scores = self._scores(job, inner, found)
        order = sorted(range(len(found)), key=lambda k: (-scores[k], k))
        return Prepared(inner.values, inner.items, {"inner": inner, "blocks": found, "order": order, "scores": scores})

    def choose(self, job: Job, prepared: Prepared, budget: int) -> Selection:
        found: list[list[int]] = prepared.state["blocks"]
        kept = keep_blocks(prepared.state["order"], found, job.fitter, budget, self.coarse_factor)
        inner: Prepared = prepared.state["inner"]
        with job.fitter.restricted(i for k in kept for i in found[k]):
            selection = self.press.choose(job, inner, budget)
        if selection.tokens < budget and len(kept) < len(found):  # the kept blocks could not fill the budget:
            items = inner.items or [[i] for i, u in enumerate(job.segmented.units) if u.droppable]
            selection = job.fitter.select(items, inner.values, budget, initial=selection.keep)  # top up from the rest
        return selection

    def resolved_rank(self, job: Job) -> Rank:
        """``auto``: the question when there is one, else LexRank centrality (the most typical blocks: on
        GSM8K's demonstrations it keeps the reader's log-prob of unseen solutions far better than the
        method's own values, see the module docstring)."""
        if self.rank != "auto":
            return self.rank
        return "question" if job.question else "lexrank"

    def _scores(self, job: Job, inner: Prepared, found: list[list[int]]) -> list[float]:
        """Higher is kept first."""
        rank, segmented = self.resolved_rank(job), job.segmented
        texts = ["".join(segmented.units[i].text for i in block) for block in found]
        if rank == "lexrank":
            return lexrank(texts)
        if rank == "question" and job.question:
            if job.scorer is None:
                return relevance(texts, job.question)
            scorer = job.scorer
            tokens = map_tokens(segmented, scorer)
            asked = scorer.encode("\n\n" + job.question + RESTRICT)[0]
            return [-question_perplexity(scorer, ids, asked) for ids in block_tokens(tokens, found)]
        if rank == "own" and any(inner.values):
            costs = job.fitter.costs
            return [
                sum(inner.values[i] for i in b if segmented.units[i].droppable)
                / max(1, sum(costs[i] for i in b if segmented.units[i].droppable))
                for b in found
            ]
        if job.scorer is None:  # no LM and no values of its own: centrality is what is left
            return lexrank(texts)
        scorer = job.scorer
        tokens = map_tokens(segmented, scorer)
        surprisal = scorer.surprisal(tokens.ids)
        n = len(segmented.units)
        sums, counts = tokens.unit_sums(surprisal, n), tokens.unit_sums(torch.ones_like(surprisal), n)
        return [sum(sums[i] for i in b) / max(1.0, sum(counts[i] for i in b)) for b in found]
