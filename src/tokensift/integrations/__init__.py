"""Adapters for the frameworks users already run: a LangChain document compressor and a LlamaIndex node
postprocessor, both thin wrappers over :class:`tokensift.text.api.Compressor` (optional extras
``langchain`` and ``llamaindex``)."""
