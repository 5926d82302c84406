"""Shared pieces of the prompt-compression tests: a tiny scorer and target tokenizers of three kinds."""

from __future__ import annotations

import random
import re

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tests.conftest import WORDS, tiny_llama
from tokensift.text.scoring import Scorer

VOCAB = [w for w in WORDS[2:] if w.isalpha()]
PUNCT = [".", ",", ";", "!", "?"]


def sentence_text(n_words: int, seed: int = 0) -> str:
    """Words from the tiny vocabulary with punctuation, spaces and some line breaks."""
    rng = random.Random(seed)
    out = []
    for i in range(n_words):
        word = rng.choice(VOCAB)
        if rng.random() < 0.1:
            word += rng.choice(PUNCT)
        out.append(word)
        if i < n_words - 1:
            out.append("\n" if rng.random() < 0.04 else " ")
    return "".join(out)


def bpe_tokenizer(*, pretokenize: bool) -> PreTrainedTokenizerFast:
    """A small byte-level BPE trained on the tiny vocabulary; without a pre-tokenizer its tokens cross
    word boundaries, so token counts are not additive over words (the hard case for exact budgets)."""
    backend = Tokenizer(models.BPE(unk_token=None))
    if pretokenize:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if pretokenize else [], show_progress=False
    )
    corpus = [sentence_text(200, seed) for seed in range(20)]
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def scorer(word_tokenizer) -> Scorer:
    return Scorer(tiny_llama(), word_tokenizer, prefix_id=1, name="tiny")


def words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def bare_words(text: str) -> list[str]:
    """Words without a trailing full stop, ? or ! (a dropped sentence end moves to the last kept word)."""
    return [re.sub(r"[.!?]+$", "", w) for w in words(text)]
