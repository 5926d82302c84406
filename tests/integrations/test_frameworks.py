"""The LangChain compressor and the LlamaIndex postprocessor in a real retriever pipeline of each package."""

import pytest

from tests.text.helpers import scorer
from tokensift.errors import ParameterError

DOCS = [
    "the cat sat on the mat and the cat ran to the house .",
    "a dog ran to the house and the dog sat on the mat .",
    "one two three four five six seven eight nine zero .",
]


@pytest.fixture
def tiny(word_tokenizer):
    return scorer(word_tokenizer)


def test_langchain_retriever_then_compressor(tiny):
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    from tokensift.integrations.langchain import TokensiftCompressor

    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document(page_content=d, metadata={"n": k}, id=str(k)) for k, d in enumerate(DOCS)])
    found = store.as_retriever(search_kwargs={"k": 3}).invoke("where did the dog run")
    assert len(found) == 3
    compressor = TokensiftCompressor(
        method="coarse:random", model=tiny, keep_tokens=12, options={"coarse_factor": 1.0, "rank": "question"}
    )
    out = compressor.compress_documents(found, "where did the dog run")
    assert [d.metadata["n"] for d in out] == [1]  # the dog document ranks first and alone fits
    assert out[0].id == "1" and out[0].metadata["tokensift"]["tokens_after"] <= 12
    assert set(out[0].page_content.replace(".", " ").split()) <= set(DOCS[1].split())
    assert compressor.compress_documents([], "q") == []


def test_langchain_default_budget_and_bad_budget(tiny):
    from tokensift.integrations.langchain import TokensiftCompressor

    assert TokensiftCompressor(model=tiny).keep == 0.5
    assert TokensiftCompressor(model=tiny, ratio=0.3).keep is None
    with pytest.raises(ParameterError):
        TokensiftCompressor(model=tiny, keep=0.5, ratio=0.3)
    with pytest.raises(ParameterError):
        TokensiftCompressor(model=tiny, keep=1.5)


def test_llamaindex_query_engine_with_the_postprocessor(tiny):
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM

    from tokensift.integrations.llamaindex import TokensiftNodePostprocessor

    index = VectorStoreIndex.from_documents(
        [Document(text=d, metadata={"n": k}) for k, d in enumerate(DOCS)], embed_model=MockEmbedding(embed_dim=8)
    )
    post = TokensiftNodePostprocessor(method="random", model=tiny, keep=0.5)
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=3, node_postprocessors=[post])
    response = engine.query("where did the dog run")
    nodes = response.source_nodes
    assert 1 <= len(nodes) <= 3
    before = sum(len(d.split()) for d in DOCS)
    after = sum(len(n.node.get_content().split()) for n in nodes)
    assert after < before
    about = nodes[0].node.metadata["tokensift"]
    assert about["method"] == "random" and about["tokens_after"] <= about["tokens_before"] // 2 + 1
    assert all(n.score is not None for n in nodes)
    with pytest.raises(ParameterError):
        TokensiftNodePostprocessor(model=tiny, keep_tokens=0)
