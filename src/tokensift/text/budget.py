"""Exact budgets on a target tokenizer: select lexical units, render, count, repair.

How the budget is met exactly (the issue's "say how"): every unit's cost is its token count on the
*target* tokenizer; the first selection is a 0/1 knapsack over those exact costs
(:func:`tokensift.select.knapsack_select`); the output is then rendered and counted for real, because
tokens can merge across unit boundaries, and repaired — the least valuable kept items are dropped while
the count is over the budget, the most valuable dropped items (then single words) are added while they
fit — until the count is at most the budget and nothing more fits.

Bonded words (:attr:`tokensift.text.units.Segmented.bonds`: dates, numbers with their scale, names,
quotations, and phrases or sentences when asked) are one item wherever they appear: every list of items a
method gives is closed over the bonds before selection, so no method can keep half of one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tokensift.errors import BudgetError
from tokensift.reduce import drop_units
from tokensift.select import density_order, knapsack_select
from tokensift.text.units import Segmented, is_abbreviation

MAX_REPAIR_ROUNDS = 64
_SENTENCE_STOP = re.compile(r"[^.!?]([.!?])[\"')\]]*\s*$")
_ENDED = re.compile(r"[.!?,;:][\"')\]]*\s*$")
LAST_MILE_TRIES = 32


class TokenCounter:
    """Token counts on one tokenizer (special tokens excluded), e.g. the target LLM's."""

    def __init__(self, tokenizer: Any, name: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.name = name or str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def costs(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text on its own."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]


def render(segmented: Segmented, keep: Sequence[bool]) -> list[str]:
    """The kept text of every part (leading spaces left by a dropped first word are trimmed).

    A sentence whose last word is dropped keeps its end: the full stop (or ? !) moves to the last kept word
    of that sentence, so sentences do not run together; the count that follows is measured for real.
    """
    texts = []
    for part, original in enumerate(segmented.parts):
        index = segmented.part_units(part)
        pieces = [segmented.units[i].text for i in index]
        kept = [keep[i] for i in index]
        last = None
        for k, i in enumerate(index):
            unit = segmented.units[i]
            if kept[k]:
                last = k if unit.droppable else None
                if last is not None and _ENDED.search(pieces[k]):
                    last = None
            elif unit.droppable and last is not None:
                end = _SENTENCE_STOP.search(unit.text)
                if end is not None and not is_abbreviation(unit.text.strip()):
                    pieces[last] = pieces[last].rstrip() + end.group(1)
                    last = None
        text = drop_units(pieces, kept)
        if not original[:1].isspace():
            text = text.lstrip(" \t")
        texts.append(text)
    return texts


def count_parts(counter: TokenCounter, texts: Sequence[str]) -> int:
    """Total tokens of the parts, each counted on its own (how a list of documents or messages is sent)."""
    return sum(counter.count(t) for t in texts)


@dataclass
class Selection:
    """Which units are kept and what the output measures on the target tokenizer."""

    keep: list[bool]
    tokens: int
    texts: list[str]
    order: list[int] | None = None
    """Output order of the parts (LongLLMLingua's reordering); None keeps the input order."""


class BudgetFitter:
    """Select units of a segmented input under an exact token budget (see the module docstring)."""

    def __init__(self, segmented: Segmented, counter: TokenCounter) -> None:
        self.segmented = segmented
        self.counter = counter
        self.costs = counter.costs([u.text for u in segmented.units])
        self.fixed = [not u.droppable for u in segmented.units]
        self.bond_of: dict[int, int] = {i: k for k, bond in enumerate(segmented.bonds) for i in bond}
        self.allowed: frozenset[int] | None = None
        """When set (:meth:`restricted`), only these units may be kept besides the always-kept ones."""

    @contextmanager
    def restricted(self, allowed: Iterable[int]) -> Iterator[None]:
        """Select only among ``allowed`` units inside the block (a coarse step's kept blocks)."""
        previous, self.allowed = self.allowed, frozenset(allowed)
        try:
            yield
        finally:
            self.allowed = previous

    def permits(self, unit: int) -> bool:
        return self.allowed is None or unit in self.allowed

    def close(self, items: Sequence[Sequence[int]]) -> list[list[int]]:
        """``items`` merged wherever they share a bond, each grown to its bonds' whole words (input order)."""
        bonds = self.segmented.bonds
        if not bonds:
            return [list(item) for item in items]
        parent = list(range(len(items)))

        def root(k: int) -> int:
            while parent[k] != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        owner: dict[int, int] = {}
        for k, item in enumerate(items):
            for i in item:
                bond = self.bond_of.get(i)
                if bond is None:
                    continue
                if bond in owner:
                    parent[root(k)] = root(owner[bond])
                else:
                    owner[bond] = k
        merged: dict[int, set[int]] = {}
        for k, item in enumerate(items):
            group = merged.setdefault(root(k), set())
            for i in item:
                group.add(i)
                bond = self.bond_of.get(i)
                if bond is not None:
                    group.update(bonds[bond])
        return [sorted(group) for group in merged.values() if group]

    def whole(self, keep: Sequence[bool]) -> list[bool]:
        """``keep`` with every partly kept bond kept whole (the repair then drops what is over the budget)."""
        keep = list(keep)
        for bond in self.segmented.bonds:
            if any(keep[i] for i in bond):
                for i in bond:
                    keep[i] = True
        return keep

    def measure(self, keep: Sequence[bool]) -> Selection:
        texts = render(self.segmented, keep)
        return Selection(list(keep), count_parts(self.counter, texts), texts)

    def floor(self) -> int:
        """Tokens of the output when only the always-kept units remain."""
        return self.measure(self.fixed).tokens

    def check(self, budget: int) -> None:
        """Raise :class:`BudgetError` when the protected spans alone exceed ``budget``."""
        floor = self.floor()
        if floor > budget:
            raise BudgetError(
                f"protected spans alone need {floor} tokens, {floor - budget} more than the budget of {budget}; "
                "raise the budget or protect less"
            )

    def item_cost(self, item: Sequence[int]) -> int:
        return sum(self.costs[i] for i in item)

    def select(
        self,
        items: Sequence[Sequence[int]],
        values: Sequence[float],
        budget: int,
        *,
        initial: Sequence[bool] | None = None,
    ) -> Selection:
        """Keep the droppable units of the best ``items`` (value = sum of unit ``values``) within ``budget``.

        ``initial`` starts the repair from a given selection (e.g. LLMLingua's iterative pass) instead of
        the knapsack. Units outside ``items`` are never added.
        """
        self.check(budget)
        if self.allowed is not None:
            items = [[i for i in item if i in self.allowed] for item in items]
            items = [item for item in items if item]
            if initial is not None:
                initial = [k and self.permits(i) for i, k in enumerate(initial)]
        items = self.close(items)
        item_values = [sum(values[i] for i in item) for item in items]
        keep = list(self.fixed)
        if initial is None:
            room = budget - sum(c for c, f in zip(self.costs, self.fixed, strict=True) if f)
            for k in knapsack_select(item_values, [self.item_cost(it) for it in items], max(0, room)):
                for i in items[k]:
                    keep[i] = True
        else:
            keep = self.whole([k or f for k, f in zip(initial, self.fixed, strict=True)])
        return self.repair(keep, items, item_values, values, budget)

    def repair(
        self,
        keep: list[bool],
        items: Sequence[Sequence[int]],
        item_values: Sequence[float],
        values: Sequence[float],
        budget: int,
    ) -> Selection:
        """Measure for real; shrink while over the budget, fill while something fits; return the fullest
        selection seen that is within the budget."""
        words = self.close([[i] for item in items for i in item])
        word_values = [sum(values[i] for i in w) for w in words]
        current = self.measure(keep)
        best: Selection | None = None
        seen: set[tuple[bool, ...]] = set()
        for _ in range(MAX_REPAIR_ROUNDS):
            state = tuple(current.keep)
            if state in seen:
                break
            seen.add(state)
            if current.tokens <= budget and (best is None or current.tokens > best.tokens):
                best = current
            if current.tokens == budget:
                break
            if current.tokens > budget:
                step = self._shrink(current.keep, items, item_values, current.tokens - budget)
            else:
                step = self._grow(current.keep, items, item_values, budget - current.tokens)
                if step == current.keep:
                    step = self._grow(current.keep, words, word_values, budget - current.tokens)
                if step == current.keep:
                    step = self._last_word(current, words, word_values, budget)
                if step == current.keep:
                    break
            current = self.measure(step)
        while best is None:  # always ends: dropping every droppable unit reaches the checked floor
            current = self.measure(self._shrink(current.keep, words, word_values, current.tokens - budget))
            best = current if current.tokens <= budget else None
        return best

    def _last_word(
        self, current: Selection, words: Sequence[Sequence[int]], values: Sequence[float], budget: int
    ) -> list[bool]:
        """Try the best few dropped words one by one, measured for real (their costs in context can be
        smaller than alone); the first that still fits is added."""
        dropped = [k for k, w in enumerate(words) if not any(current.keep[i] for i in w)]
        order = density_order([values[k] for k in dropped], [self.item_cost(words[k]) for k in dropped])
        for j in order[:LAST_MILE_TRIES]:
            trial = list(current.keep)
            for i in words[dropped[j]]:
                trial[i] = True
            if current.tokens < self.measure(trial).tokens <= budget:
                return trial
        return current.keep

    def _shrink(
        self, keep: list[bool], items: Sequence[Sequence[int]], values: Sequence[float], excess: int
    ) -> list[bool]:
        """Drop the kept items worth least per token until their cost covers ``excess`` (at least one)."""
        keep = list(keep)
        kept = [k for k, item in enumerate(items) if any(keep[i] and not self.fixed[i] for i in item)]
        costs = [self.item_cost(items[k]) for k in kept]
        freed = 0
        for j in reversed(density_order([values[k] for k in kept], costs)):
            for i in items[kept[j]]:
                keep[i] = self.fixed[i]
            freed += costs[j]
            if freed >= excess:
                break
        return keep

    def _grow(
        self, keep: list[bool], items: Sequence[Sequence[int]], values: Sequence[float], slack: int
    ) -> list[bool]:
        """Add the dropped items worth most per token whose cost fits in ``slack``."""
        keep = list(keep)
        dropped = [k for k, item in enumerate(items) if not any(keep[i] for i in item)]
        costs = [self.item_cost(items[k]) for k in dropped]
        for j in density_order([values[k] for k in dropped], costs):
            if 0 < costs[j] <= slack:
                for i in items[dropped[j]]:
                    keep[i] = True
                slack -= costs[j]
        return keep
