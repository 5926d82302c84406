"""The distilled keep/drop classifier behind the ``lingua2`` method: a small encoder reads the text once and a
tiny head gives every word its probability of being kept — no language-model pass at compression time.

LLMLingua-2 (Pan et al., 2024, arXiv:2403.12968) trains a bidirectional encoder as a token classifier on
keep/drop labels distilled from a large model. Here the encoder is the embedded all-MiniLM-L6-v2, frozen;
a word's features are its subword tokens' mean hidden state at two depths (``LAYERS``), and only the head
(two small linear layers, a few hundred KB) is trained — by :mod:`tokensift.text.lingua2_train`, whose
command and log ship beside the weights. Long inputs are read in windows cut at word boundaries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tokensift.errors import InputFileError, ModelError

ENCODER = "minilm-l6"
LAYERS = (3, 6)
"""Hidden states (after these encoder layers) whose mean over a word's tokens are its features."""
HIDDEN = 64
WINDOW = 510
"""Tokens per encoder window (the [CLS] and [SEP] of BERT make 512)."""
BUNDLED = Path(__file__).resolve().parent / "weights" / "lingua2-minilm.safetensors"


class KeepHead(nn.Module):
    """Word features -> logit of keeping the word."""

    def __init__(self, features: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features).squeeze(-1)


@torch.no_grad()
def word_features(encoder: Any, tokenizer: Any, texts: Sequence[str], window: int = WINDOW) -> Tensor:
    """Features of every text piece (a word with its leading space, a line break …), shape (n, width).

    Pieces are tokenized on their own and read in order, in windows of at most ``window`` tokens cut
    between pieces; a piece without tokens (whitespace) gets zeros.
    """
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    width = encoder.config.hidden_size * len(LAYERS)
    out = torch.zeros(len(texts), width)
    start = 0
    while start < len(ids):
        stop, size = start, 0
        while stop < len(ids) and (size + len(ids[stop][:window]) <= window or stop == start):
            size += len(ids[stop][:window])
            stop += 1
        flat = [t for piece in ids[start:stop] for t in piece[:window]]
        if flat:
            row = [tokenizer.cls_token_id, *flat, tokenizer.sep_token_id]
            hidden = encoder(torch.tensor([row]), output_hidden_states=True).hidden_states
            states = torch.cat([hidden[layer][0, 1:-1] for layer in LAYERS], dim=-1)
            at = 0
            for k in range(start, stop):
                n = len(ids[k][:window])
                if n:
                    out[k] = states[at : at + n].mean(0)
                at += n
        start = stop
    return out


@dataclass
class KeepClassifier:
    """The frozen encoder, its tokenizer and a trained head; :meth:`probabilities` per text piece."""

    encoder: Any
    tokenizer: Any
    head: KeepHead
    meta: dict[str, Any]

    @torch.no_grad()
    def probabilities(self, texts: Sequence[str]) -> list[float]:
        features = word_features(self.encoder, self.tokenizer, texts)
        return torch.sigmoid(self.head(features)).tolist()


def load_head(path: Path) -> tuple[KeepHead, dict[str, Any]]:
    """A head and its metadata (labels, encoder, dev scores) from a safetensors file."""
    from safetensors import safe_open

    if not path.is_file():
        raise InputFileError(f"lingua2 weights {path} not found; train them with `tokensift train-lingua2`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("tokensift", "{}"))
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # a damaged or foreign file: say which
        raise ModelError(f"cannot read lingua2 weights from {path}: {exc}") from None
    head = KeepHead(int(state["net.0.weight"].shape[1]), int(state["net.0.weight"].shape[0]))
    head.load_state_dict(state)
    head.eval()
    return head, meta


def save_head(head: KeepHead, path: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous() for key, value in head.state_dict().items()}
    save_file(state, str(path), metadata={"tokensift": json.dumps(meta)})


@lru_cache(maxsize=2)
def load_classifier(weights: str = "bundled") -> KeepClassifier:
    """The encoder (embedded MiniLM) with the bundled head, or a head file given by path."""
    from tokensift.models import load_model

    head, meta = load_head(BUNDLED if weights == "bundled" else Path(weights))
    loaded = load_model(meta.get("encoder", ENCODER))
    return KeepClassifier(loaded.model, loaded.tokenizer, head, meta)
