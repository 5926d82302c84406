"""Prompt compression: split a prompt into whole-word units, score them with a small LM, keep the best
under an exact budget on a target tokenizer. Entry point: :func:`compress`."""

from tokensift.text.compress import Compression, Compressor, compress
from tokensift.text.units import Protect

__all__ = ["Compression", "Compressor", "Protect", "compress"]
