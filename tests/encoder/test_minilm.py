"""all-MiniLM-L6-v2: the sentence-transformers embedding, and reduction on the real model (short inputs)."""

import numpy as np
import pytest
import torch

from tokensift.encoder import reduce, sentence_embeddings
from tokensift.encoder.embed import max_length_for
from tokensift.encoder.schedule import Schedule
from tokensift.errors import EmptyInputError, InputError
from tokensift.methods import list_methods

pytestmark = pytest.mark.model

TEXTS = [
    "The cat sat on the mat.",
    "Token merging speeds up transformers by combining similar tokens between blocks.",
    "Paris is the capital and most populous city of France.",
]


@pytest.fixture(scope="module")
def minilm():
    from tokensift.models import load_model

    return load_model("minilm-l6")


def reference_embeddings(model, tokenizer, texts):
    """The sentence-transformers recipe for this model: mean over real tokens, then L2 normalisation."""
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_embeddings_match_the_sentence_transformers_recipe(minilm):
    model, tokenizer = minilm
    assert max_length_for(tokenizer, model, minilm.path) == 256
    result = sentence_embeddings(model, tokenizer, TEXTS, batch_size=2)
    np.testing.assert_allclose(result.embeddings, reference_embeddings(model, tokenizer, TEXTS), atol=1e-5)
    exact = sentence_embeddings(model, tokenizer, TEXTS, batch_size=2, method="tome", schedule=Schedule(ratio=0.0))
    np.testing.assert_array_equal(exact.embeddings, result.embeddings)


LOOSER = {"repshift": 0.5}
"""RepShift drops the tokens its block changed least, which on short sentences include content words: its
cosine at 25 % removed is 0.82 / 0.76 on NQ passages / WikiText sentences (benchmarks/RESULTS-encoder.md)."""


@pytest.mark.parametrize("method", [m.name for m in list_methods("encoder") if not m.baseline])
def test_mild_reduction_stays_close(minilm, method):
    model, tokenizer = minilm
    texts = TEXTS[1:]  # a 9-token sentence loses too much to a 25 % cut (see benchmarks/RESULTS-encoder.md)
    full = sentence_embeddings(model, tokenizer, texts)
    reduced = sentence_embeddings(model, tokenizer, texts, method=method, schedule=Schedule(ratio=0.25))
    cosine = (full.embeddings * reduced.embeddings).sum(axis=1)
    assert cosine.min() > LOOSER.get(method, 0.9)
    assert (reduced.kept < reduced.tokens).all() and (reduced.flops < full.flops).all()


def test_padded_batch_rows_equal_rows_alone_on_the_real_model(minilm):
    model, tokenizer = minilm
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad(), reduce(model, "tome", ratio=0.5) as patch:
        out = model(**batch).last_hidden_state
        state = patch.last
        for row, text in enumerate(TEXTS):
            alone = model(**tokenizer([text], return_tensors="pt")).last_hidden_state[0]
            torch.testing.assert_close(out[row, : alone.shape[0]], alone, atol=1e-4, rtol=1e-4)
    assert state is not None
    assert state.sizes.sum(1).tolist() == batch["attention_mask"].sum(1).float().tolist()


def test_bad_texts(minilm):
    model, tokenizer = minilm
    with pytest.raises(EmptyInputError, match="text 2 is empty"):
        sentence_embeddings(model, tokenizer, ["ok", "  "])
    with pytest.raises(InputError, match="text 1 has 302 tokens, more than the 256"):
        sentence_embeddings(model, tokenizer, ["word " * 300], max_length=256)
    truncated = sentence_embeddings(model, tokenizer, ["word " * 300], max_length=256, truncate=True)
    assert truncated.truncated == [0] and truncated.tokens.tolist() == [256]
