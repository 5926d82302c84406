"""``llmlingua``: Jiang et al., 2023, "LLMLingua: Compressing Prompts for Accelerated Inference of Large
Language Models" (EMNLP, arXiv:2310.05736).

Two of the paper's three parts (the third, aligning the small LM with the target LLM, needs training):

1. **Budget controller.** The prompt's blocks (documents, or the paragraphs/demonstrations of one text)
   are ranked by their perplexity under the small LM; the most perplexing are kept until they hold
   ``coarse_factor`` times the token budget (the paper's granular control coefficient), the rest are
   dropped whole (their protected spans stay). The ranking pass runs only when blocks will be dropped.
2. **Iterative token-level compression.** The kept text is read in segments of about
   ``segment_tokens`` tokens. Each segment is scored *conditioned on the already compressed prefix*: the
   prefix's KV cache is carried over and pruned to the kept tokens, never recomputed. Each segment keeps
   its most informative words at the running rate (surplus or deficit carried to the next segment).

Decisions are on whole words (value = summed conditional surprisal of their tokens), and the result
gets the exact-budget repair of :mod:`tokensift.text.budget`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from tokensift.reduce import gather_tokens
from tokensift.registry import Paper, option, register
from tokensift.select import knapsack_select
from tokensift.text.budget import BudgetFitter, Selection
from tokensift.text.methods.base import Job, Prepared, TextMethod
from tokensift.text.scoring import Scorer, map_tokens
from tokensift.text.units import blocks


def keep_blocks(
    order: Sequence[int], found: Sequence[Sequence[int]], fitter: BudgetFitter, budget: int, factor: float
) -> list[int]:
    """Blocks taken in ``order`` (most important first) until they hold ``factor * budget`` tokens."""
    kept, held = [], 0
    for block in order:
        if held >= factor * budget:
            break
        kept.append(block)
        held += fitter.item_cost(found[block])
    return sorted(kept)


def prune_cache(cache: Any, index: list[int]) -> None:
    """Keep only the positions ``index`` of every layer of a transformers ``DynamicCache``."""
    for layer in cache.layers:
        keys, values = layer.keys, layer.values
        positions = torch.tensor(index, device=keys.device)[None, None].expand(keys.shape[0], keys.shape[1], -1)
        layer.keys = gather_tokens(keys, positions)
        layer.values = gather_tokens(values, positions)


@register
@dataclass
class LLMLinguaMethod(TextMethod):
    """Budget controller over blocks, then iterative word-level compression reusing the KV cache."""

    name: ClassVar[str] = "llmlingua"
    paper: ClassVar[Paper] = Paper(
        "Jiang et al., 2023",
        "LLMLingua: Compressing Prompts for Accelerated Inference of Large Language Models",
        arxiv="2310.05736",
    )
    summary: ClassVar[str] = "budget controller over blocks, then iterative word-level compression on a pruned KV cache"

    segment_tokens: int = option(200, low=1)
    coarse_factor: float = option(2.0, low=1.0)

    def prepare(self, job: Job) -> Prepared:
        """Only the blocks: everything else depends on the budget."""
        return Prepared(
            [0.0] * len(job.segmented.units), [], {"blocks": blocks(job.segmented, "documents-or-paragraphs")}
        )

    def choose(self, job: Job, prepared: Prepared, budget: int) -> Selection:
        found: list[list[int]] = prepared.state["blocks"]
        total = sum(job.fitter.item_cost(b) for b in found)
        if len(found) > 1 and total > self.coarse_factor * budget and "order" not in prepared.state:
            prepared.state["order"] = self._rank_blocks(job, found)  # only when blocks will be dropped
        order = prepared.state.get("order", list(range(len(found))))
        kept_blocks = keep_blocks(order, found, job.fitter, budget, self.coarse_factor)
        units = sorted(i for k in kept_blocks for i in found[k] if job.fitter.permits(i))
        values, keep = self._iterative(job, units, budget)
        items = [[i] for i in units if job.segmented.units[i].droppable]
        return job.fitter.select(items, values, budget, initial=keep)

    @staticmethod
    def _rank_blocks(job: Job, found: Sequence[Sequence[int]]) -> list[int]:
        """Blocks by perplexity under the small LM, highest first (one pass over the whole input)."""
        scorer = job.model()
        tokens = map_tokens(job.segmented, scorer)
        surprisal = scorer.surprisal(tokens.ids)
        n = len(job.segmented.units)
        sums, counts = tokens.unit_sums(surprisal, n), tokens.unit_sums(torch.ones_like(surprisal), n)
        ppl = [sum(sums[i] for i in b) / max(1.0, sum(counts[i] for i in b)) for b in found]
        return sorted(range(len(found)), key=lambda k: -ppl[k])

    def _segments(self, units: Sequence[int], ids: Sequence[Sequence[int]]) -> Iterator[list[int]]:
        """Consecutive positions into ``units`` holding about ``segment_tokens`` scoring tokens each."""
        current: list[int] = []
        size = 0
        for position, token_ids in enumerate(ids):
            current.append(position)
            size += len(token_ids)
            if size >= self.segment_tokens:
                yield current
                current, size = [], 0
        if current:
            yield current

    @torch.no_grad()
    def _iterative(self, job: Job, units: list[int], budget: int) -> tuple[list[float], list[bool]]:
        """Score and select segment by segment, conditioned on the compressed prefix (KV cache reused)."""
        from transformers import DynamicCache

        scorer, fitter, segmented = job.model(), job.fitter, job.segmented
        n = len(segmented.units)
        values, keep = [0.0] * n, [False] * n
        ids = scorer.tokenizer([segmented.units[i].text for i in units], add_special_tokens=False)["input_ids"]
        droppable = [i for i in units if segmented.units[i].droppable]
        fixed_cost = sum(c for c, f in zip(fitter.costs, fitter.fixed, strict=True) if f)
        rate = max(0.0, budget - fixed_cost) / max(1, sum(fitter.costs[i] for i in droppable))
        context = int(getattr(scorer.model.config, "max_position_embeddings", 0) or 0) or None
        cache, last_logits, sinks = DynamicCache(), None, 0
        if scorer.prefix_id is not None:
            last_logits = self._forward(scorer, torch.tensor([scorer.prefix_id]), cache)[-1]
            sinks = 1
        carry = 0.0
        for segment in self._segments(units, ids):
            seg_ids = torch.tensor([t for p in segment for t in ids[p]], dtype=torch.long)
            if seg_ids.numel() == 0:
                continue
            if context is not None:
                self._fit_context(cache, int(seg_ids.numel()), context, sinks)
            before = cache.get_seq_length()
            logits = self._forward(scorer, seg_ids, cache)
            surprisal = self._surprisal(logits, seg_ids, last_logits)
            spans, start = [], 0
            for p in segment:
                spans.append((start, start + len(ids[p])))
                values[units[p]] = float(surprisal[start : start + len(ids[p])].sum())
                start += len(ids[p])
            local = [units[p] for p in segment if segmented.units[units[p]].droppable]
            wanted = rate * sum(fitter.costs[i] for i in local) + carry
            chosen = {
                local[k]
                for k in knapsack_select(
                    [values[i] for i in local], [fitter.costs[i] for i in local], max(0, round(wanted))
                )
            }
            carry = wanted - sum(fitter.costs[i] for i in chosen)
            kept_positions: list[int] = []
            for p, (a, b) in zip(segment, spans, strict=True):
                unit = units[p]
                if unit in chosen or not segmented.units[unit].droppable:
                    keep[unit] = True
                    kept_positions += range(a, b)
            prune_cache(cache, list(range(before)) + [before + q for q in kept_positions])
            if kept_positions:
                last_logits = logits[kept_positions[-1]]
        return values, keep

    @staticmethod
    def _forward(scorer: Scorer, ids: Tensor, cache: Any) -> Tensor:
        out = scorer.model(ids[None].to(scorer.device), past_key_values=cache, use_cache=True)
        return out.logits[0].float().cpu()

    @staticmethod
    def _surprisal(logits: Tensor, ids: Tensor, last_logits: Tensor | None) -> Tensor:
        """Surprisal of the segment's tokens; the first is predicted by the compressed prefix's last logits
        (float32 and no entropy: this runs once per segment)."""
        surprisal = torch.zeros(int(ids.shape[0]))
        surprisal[1:] = -torch.log_softmax(logits[:-1], -1).gather(-1, ids[1:, None]).squeeze(-1)
        if last_logits is not None:
            surprisal[0] = -torch.log_softmax(last_logits, -1)[ids[0]]
        return surprisal

    @staticmethod
    def _fit_context(cache: Any, incoming: int, context: int, sinks: int) -> None:
        """Drop the oldest cached positions (after ``sinks``) so ``incoming`` new tokens fit the context."""
        length = cache.get_seq_length()
        if length + incoming > context:
            tail = max(0, context - incoming - sinks)
            prune_cache(cache, list(range(sinks)) + list(range(length - tail, length)))
