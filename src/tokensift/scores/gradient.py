"""Gradient x input attribution: how much each input token moves the log-probability of a continuation.

Saliency as in Simonyan et al. (2014) and Shrikumar et al. (2017) ("gradient x input"), used for prompt
compression by FrugalPrompt (2025): keep the tokens that the model's own continuation depends on most.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor


@torch.no_grad()
def greedy_continuation(model: torch.nn.Module, input_ids: Tensor, steps: int) -> Tensor:
    """The model's ``steps`` most likely next tokens after ``input_ids [T]`` (greedy, KV cache reused)."""
    device = next(model.parameters()).device
    out = model(input_ids[None].to(device), use_cache=True, logits_to_keep=1)
    picked = []
    for _ in range(steps):
        token = out.logits[0, -1].argmax()
        picked.append(int(token))
        out = model(token.view(1, 1), past_key_values=out.past_key_values, use_cache=True)
    return torch.tensor(picked, dtype=torch.long)


def gradient_x_input(model: torch.nn.Module, input_ids: Tensor, target_ids: Tensor) -> Tensor:
    """``|grad . embedding|`` of each of ``input_ids [T]`` for ``log p(target_ids | input_ids)``; ``[T]``."""
    device = next(model.parameters()).device
    ids = torch.cat([input_ids, target_ids]).to(device)
    embedding: torch.nn.Module = cast(Any, model).get_input_embeddings()  # a transformers PreTrainedModel
    with torch.enable_grad():
        embeds = embedding(ids[None]).detach().requires_grad_(True)
        n, m = int(input_ids.shape[0]), int(target_ids.shape[0])
        logits = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=m + 1).logits[0]
        predicted = torch.log_softmax(logits[:m].float(), dim=-1)  # rows predicting the continuation
        objective = predicted.gather(-1, target_ids.to(device)[:, None]).sum()
        (grad,) = torch.autograd.grad(objective, embeds)
    return (grad[0, :n] * embeds[0, :n]).sum(-1).abs().detach().float().cpu()
