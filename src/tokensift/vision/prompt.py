"""The one prompt the LLaVA is trained and asked with: SmolLM2's chat turns, the image first, no system turn."""

from __future__ import annotations

PREFIX = "<|im_start|>user\n"
"""Text before the image tokens."""
SUFFIX = "\n{question}<|im_end|>\n<|im_start|>assistant\n"
"""Text after the image tokens, up to where the answer starts."""
END = "<|im_end|>"


def prompt(question: str, image_token: str) -> str:
    """The prompt for one question, with one image placeholder (the processor expands it to the image's
    tokens)."""
    return PREFIX + image_token + SUFFIX.format(question=question.strip())
