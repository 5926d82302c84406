"""Visual-token selection for vision-language models (before the language model and inside it).

``tokensift.vision.answer(model, processor, images, questions, "visionzip", keep=0.25)`` answers with a
LLaVA-family VLM that sees only the visual tokens the method keeps; :func:`prepare` lays the inputs out for
``model.generate(inputs_embeds=..., attention_mask=...)``; :func:`prune_inputs` does the same in the language
model's space for any VLM that fills image-token positions (LLaVA-OneVision, Idefics3 / SmolVLM). Methods live
in :mod:`tokensift.vision.methods` and are registered under target ``"vision"``. Attributes are imported on
first use.
"""

from __future__ import annotations

from tokensift.face import lazy_face

_FACE = {
    "Answer": "tokensift.vision.qa",
    "Prepared": "tokensift.vision.pipeline",
    "answer": "tokensift.vision.qa",
    "prepare": "tokensift.vision.pipeline",
    "prune_inputs": "tokensift.vision.generic",
    "vlm_parts": "tokensift.vision.pipeline",
    "fastv_prefill": "tokensift.vision.fastv",
    "greedy": "tokensift.vision.fastv",
    "load_image": "tokensift.vision.images",
    "VisionMethod": "tokensift.vision.methods.base",
}

__getattr__, __dir__ = lazy_face(__name__, "vision", _FACE)
