"""Lexical relevance and centrality of text blocks, without a model: TF-IDF cosine and LexRank.

* :func:`relevance` — TF-IDF cosine of each block with a question (the classic retrieval score; what a
  question-aware coarse step can use when the method has no language model).
* :func:`lexrank` — Erkan & Radev, 2004, "LexRank: Graph-based Lexical Centrality as Salience in Text
  Summarization" (JAIR, arXiv:1109.2128): blocks are nodes, edges join blocks whose TF-IDF cosine is at
  least ``threshold``, and a block's salience is its stationary probability under a damped random walk
  on that graph (PageRank on the similarity graph): a block that many others resemble is central.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch

from tokensift.text.units import STOPWORDS

_TERM = re.compile(r"[^\W_]+", re.UNICODE)


def terms(text: str) -> list[str]:
    """Lower-cased word terms of ``text`` without stopwords."""
    return [t for t in (m.group().lower() for m in _TERM.finditer(text)) if t not in STOPWORDS]


def tfidf(texts: Sequence[str]) -> torch.Tensor:
    """Row-normalised TF-IDF vectors of ``texts`` (smoothed idf over the texts themselves), shape (n, vocab)."""
    counts = [Counter(terms(t)) for t in texts]
    vocab = {term: k for k, term in enumerate(sorted({term for c in counts for term in c}))}
    vectors = torch.zeros(len(texts), max(1, len(vocab)), dtype=torch.float64)
    df = Counter(term for c in counts for term in c)
    n = len(texts)
    for row, found in enumerate(counts):
        for term, tf in found.items():
            vectors[row, vocab[term]] = tf * (math.log((1 + n) / (1 + df[term])) + 1.0)
    return torch.nn.functional.normalize(vectors, dim=1)


def relevance(blocks: Sequence[str], question: str) -> list[float]:
    """TF-IDF cosine of every block with ``question`` (idf over the blocks and the question)."""
    vectors = tfidf([*blocks, question])
    return (vectors[:-1] @ vectors[-1]).tolist()


def lexrank(blocks: Sequence[str], threshold: float = 0.1, damping: float = 0.85, rounds: int = 100) -> list[float]:
    """LexRank salience of every block (sums to 1; uniform when no two blocks share a term)."""
    n = len(blocks)
    if n == 0:
        return []
    vectors = tfidf(blocks)
    graph = ((vectors @ vectors.T) >= threshold).double()
    graph.fill_diagonal_(0.0)
    degree = graph.sum(dim=1, keepdim=True)
    # a block like no other jumps anywhere: it lends no centrality to itself
    walk = torch.where(degree > 0, graph / degree.clamp(min=1.0), torch.full_like(graph, 1.0 / n))
    score = torch.full((n,), 1.0 / n, dtype=torch.float64)
    for _ in range(rounds):
        nxt = (1 - damping) / n + damping * (walk.T @ score)
        if torch.allclose(nxt, score, atol=1e-12):
            break
        score = nxt
    return score.tolist()
