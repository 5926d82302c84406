"""VATP keeps the tokens with the most attention x value L1 norm, computed here from eager attention."""

import torch
from transformers import DynamicCache

from tests.core.test_scores_attention import eager_attentions, group_mean
from tokensift.kv.methods.vatp import VATP
from tokensift.select import topk_indices


def test_kept_tokens_are_the_top_of_accumulated_attention_times_value_norm(llama):
    ids = torch.randint(2, 64, (1, 32), generator=torch.Generator().manual_seed(7))
    full, kept = DynamicCache(config=llama.config), DynamicCache(config=llama.config)
    with torch.no_grad():
        llama(ids, past_key_values=full)
        with VATP(keep_tokens=12, protect_first=2, recent_share=0.25)(llama):
            llama(ids, past_key_values=kept)
    attentions = eager_attentions(llama, ids)
    for layer, (reference, ragged) in enumerate(zip(full.layers, kept.layers, strict=True)):
        received = group_mean(attentions[layer].sum(2), 2)[0]  # H2O: every query row, mean over each group
        scores = received * reference.values[0].abs().sum(-1)
        expected = topk_indices(scores, 12, protect_first=2, protect_last=3)  # 25 % of 12 for recent tokens
        for h in range(2):
            assert torch.equal(ragged.segment(0, h)[0], reference.keys[0, h, expected[h]]), (layer, h)
