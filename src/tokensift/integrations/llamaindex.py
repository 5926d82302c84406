"""A LlamaIndex node postprocessor: ``TokensiftNodePostprocessor(keep=0.5)`` in ``node_postprocessors=[...]``.

It subclasses ``llama_index.core``'s ``BaseNodePostprocessor``: the retrieved nodes' texts are compressed
together to one exact budget, question-aware with the query string; a node the budget empties is left
out, the others keep their score, id and metadata (plus a ``tokensift`` entry).
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from tokensift.integrations.common import Adapter


class TokensiftNodePostprocessor(Adapter, BaseNodePostprocessor):
    """Compress retrieved nodes with a tokensift text method (default: question-aware coarse-to-fine)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    method: str = "coarse:lingua2"
    ratio: float | None = None
    keep: float | None = None
    """Fraction kept; 0.5 when no budget is given."""
    keep_tokens: int | None = None
    model: Any = "smollm2-135m"
    options: dict[str, Any] = Field(default_factory=dict)
    units: str = "word"
    _compressor: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "TokensiftNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        query = query_bundle.query_str if query_bundle is not None else None
        texts, about = self.compress_texts([n.node.get_content() for n in nodes], query)
        kept = []
        for found, text in zip(nodes, texts, strict=True):
            if not text.strip():
                continue
            node = found.node.model_copy(deep=True)
            node.set_content(text)
            node.metadata = {**node.metadata, "tokensift": about}
            kept.append(NodeWithScore(node=node, score=found.score))
        return kept
