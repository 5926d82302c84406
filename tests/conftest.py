"""Shared fixtures: tiny random-weight models and a word-level tokenizer, so unit tests run in seconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = [
    "<unk>",
    "<s>",
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "and",
    "ran",
    "to",
    "house",
    "red",
    "blue",
    "green",
    "big",
    "small",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "zero",
    ".",
    ",",
    ":",
    ";",
    "!",
    "?",
    "error",
    "login",
    "logout",
    "user",
    "admin",
    "failed",
    "ok",
    "request",
    "response",
]


def tiny_llama(
    *, vocab: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, context: int = 128, seed: int = 0
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=context,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gemma3(*, window: int = 8, seed: int = 0, layers: int = 2) -> Gemma3ForCausalLM:
    """A Gemma-3 text model of ``layers`` (even) layers: sliding-window (``window`` positions) then global, in
    turn."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=window,
        layer_types=["sliding_attention", "full_attention"] * (layers // 2),
        max_position_embeddings=128,
    )
    return Gemma3ForCausalLM(config).eval()


@pytest.fixture
def llama() -> LlamaForCausalLM:
    return tiny_llama()


def word_level_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace/punctuation word-level tokenizer with character offsets (ids < 64)."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>")


def tiny_kvzap(layers: int = 2, width: int = 32, kv_heads: int = 2) -> str:
    """A random KVzap surrogate that fits :func:`tiny_llama` (written once per shape into the temp folder)."""
    import tempfile

    from tokensift.kv.methods.kvzap import save_surrogate

    path = Path(tempfile.gettempdir()) / f"tokensift-tests-kvzap-{layers}x{width}x{kv_heads}-{os.getpid()}.safetensors"
    if not path.exists():
        generator = torch.Generator().manual_seed(0)
        weights = [torch.randn(kv_heads, width, generator=generator) for _ in range(layers)]
        biases = [torch.zeros(kv_heads) for _ in range(layers)]
        save_surrogate(path, weights, biases, {"model": "tiny", "layers": layers})
    return str(path)


def kv_options(name: str, tokenizer: object = None, layers: int = 2) -> dict:
    """What a KV method (or composition) needs on a tiny model of ``layers`` layers and 40-token inputs: a
    tokenizer for probe prompts, a surrogate fitting the model for one that reads trained weights, a small
    observation window."""
    from tokensift.methods import accepts

    found: dict = {}
    if accepts("kv", name, "tokenizer"):
        found["tokenizer"] = tokenizer
    if accepts("kv", name, "weights"):
        found["weights"] = tiny_kvzap(layers=layers)
    if accepts("kv", name, "window"):
        found["window"] = 4
    if accepts("kv", name, "kernel"):
        found["kernel"] = 3
    return found


@pytest.fixture
def word_tokenizer() -> PreTrainedTokenizerFast:
    return word_level_tokenizer()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny local model folder (random Llama + word-level tokenizer) that ``load_model`` reads by path."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_llama().save_pretrained(folder)
    word_level_tokenizer().save_pretrained(folder)
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many generated bad or edge inputs the fuzz suite ran (tests/core/test_fuzz.py)."""
    fuzz = sys.modules.get("tests.core.test_fuzz")
    counts = getattr(fuzz, "COUNTS", None)
    if counts:
        parts = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
        terminalreporter.write_line(f"fuzz: {sum(counts.values())} generated inputs ({parts})")


@pytest.fixture(scope="session")
def tiny_keep_classifier():
    """A lingua2 classifier on a tiny random BERT over the test vocabulary (the real one is a model test)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from tokensift.text.lingua2 import LAYERS, KeepClassifier, KeepHead

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS[2:]]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=max(LAYERS),
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=1024,
    )
    return KeepClassifier(BertModel(config).eval(), tokenizer, KeepHead(16 * len(LAYERS)).eval(), {"labels": "test"})


@pytest.fixture(autouse=True)
def _tiny_lingua2(request, monkeypatch, tiny_keep_classifier):
    """Unit tests run lingua2 on the tiny classifier; tests marked ``model`` load the bundled one."""
    if request.node.get_closest_marker("model") is None:
        monkeypatch.setattr(
            "tokensift.text.methods.lingua2.load_classifier", lambda weights="bundled": tiny_keep_classifier
        )
