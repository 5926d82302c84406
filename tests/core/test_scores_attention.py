"""Attention-received scores from captured query rows equal the same sums over eager attention weights."""

import pytest
import torch

from tests.core.capture import LayerAttentionInputs, capture_attention_inputs, window_attention_scores
from tokensift.scores import attention_received, observation_window


def eager_attentions(model, ids, mask=None):
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            return model(ids, attention_mask=mask, output_attentions=True).attentions
    finally:
        model.config._attn_implementation = "sdpa"


def group_mean(weights, kv_heads):  # [B, H, T] -> [B, Hkv, T]
    b, h, t = weights.shape
    return weights.view(b, kv_heads, h // kv_heads, t).mean(2)


def test_observation_window_equals_eager_weights(llama):
    ids = torch.randint(0, 64, (1, 24), generator=torch.Generator().manual_seed(0))
    window = 6
    scores = window_attention_scores(llama, ids, window=window)
    for layer, attn in enumerate(eager_attentions(llama, ids)):
        reference = group_mean(attn[:, :, -window:, :].sum(2), 2)
        torch.testing.assert_close(scores[layer], reference, atol=1e-5, rtol=0)
    assert llama.config._attn_implementation == "sdpa"


def test_window_scores_with_left_padding_equal_eager_on_real_rows(llama):
    ids = torch.randint(2, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, :5] = 0
    scores = window_attention_scores(llama, ids, window=4, attention_mask=mask)
    attentions = eager_attentions(llama, ids, mask)
    for layer, attn in enumerate(attentions):
        torch.testing.assert_close(scores[layer], group_mean(attn[:, :, -4:].sum(2), 2), atol=1e-5, rtol=0)
        assert torch.all(scores[layer][1, :, :5] == 0)  # padding keys receive nothing


def test_forgetting_factor_and_full_accumulation_equal_eager(llama):
    ids = torch.randint(0, 64, (1, 20), generator=torch.Generator().manual_seed(2))
    attn = eager_attentions(llama, ids)[1]
    weights = 0.8 ** torch.arange(19, -1, -1, dtype=torch.float32)
    a2sf = window_attention_scores(llama, ids, window=20, forgetting=0.8)[1]
    torch.testing.assert_close(a2sf, group_mean((attn * weights[None, None, :, None]).sum(2), 2), atol=1e-5, rtol=0)
    h2o = window_attention_scores(llama, ids, window=20)[1]
    torch.testing.assert_close(h2o, group_mean(attn.sum(2), 2), atol=1e-5, rtol=0)


def test_chunked_rows_match_single_pass():
    torch.manual_seed(3)
    q, k = torch.randn(2, 4, 37, 8), torch.randn(2, 2, 37, 8)
    one = attention_received(q, k, chunk=1000, forgetting=0.9, normalize=True)
    many = attention_received(q, k, chunk=5, forgetting=0.9, normalize=True)
    torch.testing.assert_close(one, many, atol=1e-6, rtol=0)


def test_normalized_scores_divide_by_rows_that_see_each_key():
    torch.manual_seed(4)
    q, k = torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    total = attention_received(q, k)
    mean = attention_received(q, k, normalize=True)
    seen = torch.tensor([5.0, 4, 3, 2, 1])  # causal: key j is visible to rows j..4
    torch.testing.assert_close(mean[0, 0], total[0, 0] / seen)


def test_per_query_head_output_and_errors():
    q, k = torch.randn(1, 6, 3, 4), torch.randn(1, 2, 3, 4)
    assert attention_received(q, k, per_kv_head=False).shape == (1, 6, 3)
    assert attention_received(q, k).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="multiple"):
        attention_received(torch.randn(1, 5, 3, 4), k)
    with pytest.raises(ValueError, match="forgetting"):
        attention_received(q, k, forgetting=0.0)
    with pytest.raises(ValueError, match="at least 1"):
        observation_window(q, k, 0)


def test_capture_keeps_only_requested_rows(llama):
    ids = torch.randint(0, 64, (1, 30))
    captured = capture_attention_inputs(llama, ids, last_queries=4, layers=[1])
    assert set(captured) == {1}
    x = captured[1]
    assert isinstance(x, LayerAttentionInputs)
    assert x.queries.shape == (1, 4, 4, 8) and x.keys.shape == (1, 2, 30, 8)
    assert x.scaling == pytest.approx(8**-0.5)
