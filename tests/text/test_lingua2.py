"""The lingua2 classifier: word features over windows, labels from answers, head files, no LM when compressing."""

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from tokensift.errors import InputFileError, ModelError
from tokensift.text.lingua2 import LAYERS, KeepClassifier, KeepHead, load_head, save_head, word_features
from tokensift.text.lingua2_train import word_labels


@pytest.fixture(scope="module")
def bert():
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "ran", "."]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=6,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    return BertModel(config).eval(), tokenizer


def test_word_features_are_mean_token_states_at_two_depths(bert):
    model, tokenizer = bert
    pieces = ["the", " cat", "\n", " sat."]
    found = word_features(model, tokenizer, pieces)
    assert found.shape == (4, 16 * len(LAYERS))
    assert found[2].abs().sum() == 0  # a line break has no tokens
    ids = [2, 5, 6, 7, 12, 3]  # [CLS] the cat sat . [SEP]
    states = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    both = torch.cat([states[layer][0] for layer in LAYERS], dim=-1)
    assert torch.allclose(found[1], both[2], atol=1e-5)
    assert torch.allclose(found[3], both[3:5].mean(0), atol=1e-5)


def test_windows_cut_between_pieces(bert):
    model, tokenizer = bert
    pieces = [" the cat"] * 5  # two tokens each
    found = word_features(model, tokenizer, pieces, window=4)  # windows of two pieces, then one
    alone = word_features(model, tokenizer, pieces[:2], window=4)
    assert torch.allclose(found[:2], alone, atol=1e-5) and torch.allclose(found[2:4], alone, atol=1e-5)
    assert found[4].abs().sum() > 0


def test_labels_mark_answer_words_and_question_words():
    text = "Charles Darwin was born in 1809 in Shrewsbury ."
    pieces, labels = word_labels(text, ["Charles Darwin", "1809"], "when was darwin born", "answer")
    assert "".join(pieces) == text
    assert [p.strip() for p, y in zip(pieces, labels, strict=True) if y == 1] == ["Charles", "Darwin", "1809"]
    _, asked = word_labels(text, ["1809"], "when was darwin born", "question")
    assert [p.strip() for p, y in zip(pieces, asked, strict=True) if y == 1] == ["Darwin", "born", "1809"]


def test_head_round_trip_and_bad_files(tmp_path, bert):
    model, tokenizer = bert
    head = KeepHead(32)
    save_head(head, tmp_path / "h.safetensors", {"labels": "answer"})
    loaded, meta = load_head(tmp_path / "h.safetensors")
    assert meta == {"labels": "answer"}
    x = torch.randn(3, 32)
    assert torch.equal(loaded(x), head(x))
    classifier = KeepClassifier(model, tokenizer, loaded, meta)
    probabilities = classifier.probabilities(["the", " cat"])
    assert len(probabilities) == 2 and all(0 < p < 1 for p in probabilities)
    with pytest.raises(InputFileError, match="not found"):
        load_head(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ModelError, match="cannot read lingua2 weights"):
        load_head(tmp_path / "bad.safetensors")


DARWIN = (
    "Charles Darwin was an English naturalist, born in Shrewsbury on 12 February 1809. He is best known for his "
    "contributions to the science of evolution. His book On the Origin of Species was published in 1859, and by "
    "the 1870s the scientific community had accepted evolution as a fact. He died on 19 April 1882 and was "
    "buried in Westminster Abbey."
)


@pytest.mark.model
def test_bundled_lingua2_keeps_names_dates_and_numbers_without_an_lm():
    from tokensift.text.api import Compressor

    compressor = Compressor("lingua2")
    prepared = compressor.prepare(DARWIN)
    assert prepared.job.scorer is None  # no LM pass when compressing
    result = compressor.compress(prepared, keep=0.5)
    assert result.tokens_after <= result.keep_tokens and result.tokens_after >= result.keep_tokens - 2
    for whole in ("Charles Darwin", "12 February 1809", "19 April 1882", "Westminster Abbey", "1859"):
        assert whole in result.compressed, whole
    words = [u.text.strip() for u in result.units]
    probability = dict(zip(words, prepared.scores.state["probabilities"], strict=True))
    assert min(probability[w] for w in ("Darwin", "1809.", "Shrewsbury")) > max(probability[w] for w in ("was", "his"))
