"""A LangChain document compressor: ``TokensiftCompressor(keep=0.5).compress_documents(docs, query)``.

It subclasses ``langchain_core``'s ``BaseDocumentCompressor``, so it drops into a
``ContextualCompressionRetriever`` or any chain after a retriever. The retrieved documents are compressed
together to one exact budget (``ratio`` removed, ``keep`` kept or ``keep_tokens``), question-aware with the
query; a document the budget empties is left out, the others keep their metadata plus a ``tokensift`` entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr

from tokensift.integrations.common import Adapter


class TokensiftCompressor(Adapter, BaseDocumentCompressor):
    """Compress retrieved documents with a tokensift text method (default: question-aware coarse-to-fine)."""

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

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        texts, about = self.compress_texts([d.page_content for d in documents], query)
        return [
            Document(page_content=text, metadata={**doc.metadata, "tokensift": about}, id=doc.id)
            for doc, text in zip(documents, texts, strict=True)
            if text.strip()
        ]
