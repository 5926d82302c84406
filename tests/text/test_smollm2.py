"""Prompt compression on SmolLM2-135M with short inputs (select with ``-m model``)."""

import pytest

from tests.text.helpers import bare_words
from tokensift.methods import list_methods
from tokensift.text import Compressor, compress

pytestmark = pytest.mark.model

TEXT = (
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. At 330 metres it was the tallest "
    "structure in the world for forty-one years, until the Chrysler Building in New York overtook it in 1930. "
    "Gustave Eiffel's company designed and built it, and millions of people visit it every year. The tower is "
    "repainted every seven years with about sixty tonnes of paint, which protects the wrought iron from rust."
)


@pytest.mark.parametrize("method", [m.name for m in list_methods("text") if not m.baseline])
def test_every_method_meets_the_budget_on_smollm2(method):
    result = compress(TEXT, keep=0.5, method=method, question="When was the Eiffel Tower completed?")
    assert result.tokens_before >= 100
    assert result.keep_tokens - 2 <= result.tokens_after <= result.keep_tokens
    assert set(bare_words(result.compressed)) <= set(bare_words(TEXT))  # a dropped sentence end may move


def test_question_aware_ranking_keeps_the_relevant_document():
    documents = [
        "Bananas are a good source of potassium and are eaten all over the world as a snack.",
        "The Eiffel Tower in Paris was completed in 1889 and designed by Gustave Eiffel's company.",
        "Rain forests hold more than half of the world's plant and animal species.",
    ]
    compressor = Compressor("longllmlingua", options={"reorder": True})
    prepared = compressor.prepare(documents, "Who designed the Eiffel Tower?")
    result = compressor.compress(prepared, rate=0.5)
    assert "Eiffel" in result.compressed[0]  # the relevant document is ranked first


def test_a_different_target_tokenizer_counts_the_budget(tmp_path):
    from transformers import AutoTokenizer

    from tokensift.models import load_model

    folder = load_model("smollm2-135m").path
    result = compress(TEXT, keep_tokens=40, method="surprisal", target_tokenizer=folder)
    assert (
        result.tokens_after
        == len(AutoTokenizer.from_pretrained(folder)(result.compressed, add_special_tokens=False)["input_ids"])
        <= 40
    )
