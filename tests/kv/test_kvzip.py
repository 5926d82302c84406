"""KVzip: reconstruction scores, the model-wide budget, and what the attached press keeps."""

import pytest
import torch
from transformers import DynamicCache

from tokensift.errors import MethodUnsupportedError, ParameterError
from tokensift.kv import compress, press_from
from tokensift.kv.methods.kvzip import KVzip, template_parts
from tokensift.kv.probe import reconstruction_probes, run_probes
from tokensift.scores import attend_and_reconstruct, reconstruction_attention
from tokensift.scores.attention import attention_with_lse
from tokensift.select import global_indices


def test_reconstruction_attention_is_the_max_softmax_weight_over_probe_rows():
    torch.manual_seed(0)
    heads, kv_heads, n, m, dim = 4, 2, 9, 5, 8
    queries, keys, probe_keys = torch.randn(heads, m, dim), torch.randn(kv_heads, n, dim), torch.randn(kv_heads, m, dim)
    found = reconstruction_attention(queries, keys, probe_keys, scaling=0.3, chunk=2)
    expected = torch.zeros(kv_heads, n)
    for h in range(heads):
        kv = h // (heads // kv_heads)
        for i in range(m):
            logits = torch.cat([keys[kv], probe_keys[kv, : i + 1]]) @ queries[h, i] * 0.3
            expected[kv] = torch.maximum(expected[kv], torch.softmax(logits, -1)[:n])
    assert torch.allclose(found, expected, atol=1e-6)


def test_global_indices_share_one_exact_budget_and_keep_protected_tokens():
    scores = [
        torch.tensor([[0.0, 9, 8, 7, 6, 5], [0, 0, 0, 0, 0, 1]]),
        torch.tensor([[0.0, 0, 0, 0, 0, 0], [4, 3, 2, 1, 0, 0]]),
    ]
    kept = global_indices(scores, 2, protect_first=1)
    assert sum(len(head) for layer in kept for head in layer) == 2 * 2 * 2
    assert all(0 in head.tolist() for layer in kept for head in layer)  # protected, so no head is empty
    assert kept[0][0].tolist() == [0, 1, 2, 3, 4]  # the strongest head takes the shared budget
    assert [kept[0][1].tolist(), kept[1][0].tolist(), kept[1][1].tolist()] == [[0], [0], [0]]
    unprotected = global_indices(scores, 2)
    assert unprotected[1][0].numel() == 1 and unprotected[0][1].tolist() == [5]  # each head keeps its best
    with pytest.raises(ParameterError):
        global_indices(scores, 7)


def test_kvzip_keeps_the_global_top_of_the_models_own_reconstruction_attention(llama, word_tokenizer):
    torch.manual_seed(3)
    ids = torch.randint(2, 64, (1, 24))
    press = KVzip(ratio=0.6, tokenizer=word_tokenizer, pass_dtype="model")  # exact: the float32 pass
    (probe,) = press.probe_inputs(ids[0].tolist())
    # reference: the eager attention rows of the probe tokens when the model reads context + probe at once
    llama.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = llama(torch.cat([ids, torch.tensor([probe])], 1), output_attentions=True)
    finally:
        llama.config._attn_implementation = "sdpa"
    reference = [a[0, :, 24:, :24].amax(1).view(2, 2, 24).amax(1) for a in out.attentions]
    assert_keeps(llama, ids, press, global_indices(reference, 10, protect_first=4), 10)


def assert_keeps(llama, ids, press, chosen, k):
    """Compressing ``ids`` with ``press`` keeps ``k`` per head on average and exactly ``chosen``'s keys."""
    full, compressed = DynamicCache(config=llama.config), DynamicCache(config=llama.config)
    with torch.no_grad():
        llama(ids, past_key_values=full)
        with compress(llama, press) as session:
            llama(ids, past_key_values=compressed)
    layers, heads = len(full.layers), full.layers[0].keys.shape[1]
    assert sum(sum(rec.kept[0]) for rec in session.stats.layers) == layers * heads * k
    for layer, (full_layer, ragged) in enumerate(zip(full.layers, compressed.layers, strict=True)):
        for h in range(heads):
            stored, _ = ragged.segment(0, h)
            assert torch.allclose(stored, full_layer.keys[0, h, chosen[layer][h]], atol=1e-6)


def test_kvzip_needs_a_tokenizer_and_full_attention_layers(llama):
    ids = torch.randint(2, 64, (1, 20))
    with pytest.raises(ParameterError, match="tokenizer"), torch.no_grad(), compress(llama, "kvzip", ratio=0.5):
        llama(ids)
    assert press_from("knorm", ratio=0.5, tokenizer=object()).ratio == 0.5  # only probe presses take it


def test_kvzip_on_gemma3_scores_the_global_layers_through_the_sliding_windows(word_tokenizer):
    from transformers import DynamicCache

    from tests.conftest import tiny_gemma3
    from tokensift.hooks import observe_attention
    from tokensift.kv.probe import reconstruction_probes

    gemma = tiny_gemma3(window=8)
    context, probe = torch.randint(2, 64, (1, 20)), torch.randint(2, 64, (1, 6))
    cache = DynamicCache(config=gemma.config)
    with torch.no_grad():
        gemma(context, past_key_values=cache, use_cache=True)
    keys, values = {1: cache.layers[1].keys}, {1: cache.layers[1].values}
    scores = reconstruction_probes(gemma, keys, values, [probe[0].tolist()], base=cache)[1][0]
    assert cache.layers[0].keys.shape[2] < 20  # the sliding layer holds its window only, and still does
    seen = {}

    def observer(module, query, key, value, mask, kwargs):
        seen["q"], seen["k"] = query, key

    with torch.no_grad(), observe_attention(gemma, {1: observer}):
        gemma(torch.cat([context, probe], dim=1))  # the context and the probe in one forward, no cache
    logits = seen["q"][0, :, 20:] @ seen["k"][0].transpose(-1, -2) * gemma.model.layers[1].self_attn.scaling
    logits = logits.masked_fill(~torch.ones(6, 26, dtype=torch.bool).tril(20), float("-inf"))
    expected = logits.softmax(-1)[..., :20].amax(dim=(0, 1))  # one KV head: every query head, every probe row
    torch.testing.assert_close(scores[0], expected, atol=1e-5, rtol=1e-4)
    press = press_from("kvzip", ratio=0.5, tokenizer=word_tokenizer)
    with torch.no_grad(), compress(gemma, press) as session:
        gemma(torch.randint(2, 64, (1, 20)), past_key_values=DynamicCache(config=gemma.config), use_cache=True)
    assert [r.layer for r in session.stats.layers] == [1] and session.stats.layers[0].kept == [[10]]
    with pytest.raises(MethodUnsupportedError, match="batch-1"), torch.no_grad(), compress(gemma, press):
        gemma(torch.randint(2, 64, (2, 20)), past_key_values=DynamicCache(config=gemma.config), use_cache=True)


def test_probe_prompts_skip_the_template_opening_and_chunk_long_contexts(word_tokenizer):
    assert template_parts(word_tokenizer)[0] == []
    press = KVzip(ratio=0.5, chunk=10, tokenizer=word_tokenizer)
    ids = list(range(2, 27))
    probes = press.probe_inputs(ids)
    assert len(probes) == 3 and probes[0][-10:] == ids[:10] and probes[2][-5:] == ids[20:]
    assert probes[1][-18:-10] == ids[2:10]  # a later chunk quotes the end of the previous one


def test_attention_and_scores_formed_once_match_the_kernel_and_the_recomputed_scores():
    torch.manual_seed(1)
    heads, kv_heads, n, m, dim = 6, 2, 11, 7, 8
    queries = torch.randn(heads, m, dim)
    keys, values = torch.randn(kv_heads, n + m, dim), torch.randn(kv_heads, n + m, dim)
    out, best = attend_and_reconstruct(queries, keys, values, n, scaling=0.4, chunk=3)
    allowed = torch.ones(m, n + m, dtype=torch.bool)
    allowed[:, n:] = torch.ones(m, m, dtype=torch.bool).tril()
    expected = torch.nn.functional.scaled_dot_product_attention(
        queries[None], keys[None], values[None], attn_mask=allowed, scale=0.4, enable_gqa=True
    )[0]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(best, reconstruction_attention(queries, keys[:, :n], keys[:, n:], scaling=0.4))
    again, best_again = attend_and_reconstruct(queries, keys, values, n, scaling=0.4)  # one chunk of every row
    torch.testing.assert_close(again, out, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(best_again, best)
    alone, nothing = attend_and_reconstruct(queries, keys[:, n:], values[:, n:], 0, scaling=0.4)
    causal = torch.nn.functional.scaled_dot_product_attention(
        queries[None], keys[None, :, n:], values[None, :, n:], is_causal=True, scale=0.4, enable_gqa=True
    )[0]
    torch.testing.assert_close(alone, causal, atol=1e-5, rtol=1e-5)
    assert nothing.shape == (kv_heads, 0)
    low, best_low = attend_and_reconstruct(queries, keys, values, n, scaling=0.4, chunk=3, products=torch.bfloat16)
    assert low.dtype == best_low.dtype == torch.float32 and not torch.equal(best_low, best)
    torch.testing.assert_close(low, out, atol=3e-2, rtol=3e-2)  # bf16 products over the context keys
    torch.testing.assert_close(best_low, best, atol=1e-2, rtol=5e-2)
    fused, explicit = (attention_with_lse(queries, keys, values, n, scaling=0.4, fused=f) for f in (True, False))
    torch.testing.assert_close(fused[0], explicit[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused[1], explicit[1], atol=1e-5, rtol=1e-5)


def prefilled(model) -> tuple[torch.Tensor, dict, dict]:
    """Thirty random tokens (seed 4) and the keys and values ``model`` cached for them, per layer."""
    torch.manual_seed(4)
    ids = torch.randint(2, 64, (1, 30))
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(ids, past_key_values=cache)
    return ids, {i: c.keys for i, c in enumerate(cache.layers)}, {i: c.values for i, c in enumerate(cache.layers)}


def test_probe_passes_that_form_their_scores_give_the_recorded_rows_scores(llama, word_tokenizer):
    ids, keys, values = prefilled(llama)
    inputs = KVzip(ratio=0.5, chunk=12, tokenizer=word_tokenizer).probe_inputs(ids[0].tolist())
    assert len(inputs) == 3
    formed = reconstruction_probes(llama, keys, values, inputs)
    recorded = run_probes(llama, keys, values, inputs)
    scaling = llama.model.layers[0].self_attn.scaling
    for layer in keys:
        assert len(formed[layer]) == 3
        for scores, (queries, probe_keys) in zip(formed[layer], recorded[layer], strict=True):
            again = reconstruction_attention(queries[0], keys[layer][0], probe_keys[0], scaling=scaling)
            torch.testing.assert_close(scores, again, atol=1e-5, rtol=1e-4)


def test_a_repeat_pass_in_bfloat16_ranks_like_the_float32_one(llama, word_tokenizer):
    """``pass_dtype="bfloat16"``: the pass's linear layers and its products over the context keys run in bf16 (its
    rows and scores move a little), its softmax and scores in float32; the scores stay close and the cache itself
    is untouched."""
    ids, keys, values = prefilled(llama)
    inputs = KVzip(ratio=0.5, tokenizer=word_tokenizer).probe_inputs(ids[0].tolist())
    exact = reconstruction_probes(llama, keys, values, inputs)
    rows, exact_rows = (run_probes(llama, keys, values, inputs, dtype=d) for d in (torch.bfloat16, None))
    assert not torch.equal(rows[1][0][0], exact_rows[1][0][0])  # the rows themselves came from bf16 projections
    fast = reconstruction_probes(llama, keys, values, inputs, dtype=torch.bfloat16)
    assert any(not torch.equal(fast[layer][0], exact[layer][0]) for layer in keys)
    for layer in keys:
        assert keys[layer].dtype == torch.float32
        torch.testing.assert_close(fast[layer][0], exact[layer][0], atol=2e-2, rtol=5e-2)
    press = press_from("kvzip", ratio=0.5, tokenizer=word_tokenizer, pass_dtype="bfloat16")
    with torch.no_grad(), compress(llama, press):
        llama(ids, past_key_values=DynamicCache(config=llama.config))
    with pytest.raises(ParameterError, match="pass_dtype"):
        press_from("kvzip", ratio=0.5, tokenizer=word_tokenizer, pass_dtype="float8")


def test_auto_pass_dtype_is_bfloat16_only_for_a_float32_model_on_fast_bf16_hardware(llama, word_tokenizer, monkeypatch):
    """The default ``pass_dtype="auto"`` runs the pass in bf16 where the hardware multiplies bf16 (AMX,
    AVX512-BF16, a bf16 GPU) and the model is float32; elsewhere the pass keeps the model's dtype."""
    from tests.conftest import tiny_llama
    from tokensift.kv import probe

    assert KVzip().pass_dtype == "auto"
    assert probe.pass_dtype(llama, "model") is None
    assert probe.pass_dtype(llama, "bfloat16") is torch.bfloat16
    monkeypatch.setattr(probe, "fast_bf16", lambda device: True)
    assert probe.pass_dtype(llama, "auto") is torch.bfloat16
    half = tiny_llama().to(torch.bfloat16)
    assert probe.pass_dtype(half, "auto") is None  # already bf16: nothing to gain
    monkeypatch.setattr(probe, "fast_bf16", lambda device: False)
    assert probe.pass_dtype(llama, "auto") is None
    seen = []
    real = probe.reconstruction_probes

    def spy(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs.get("dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr("tokensift.kv.attach.reconstruction_probes", spy)
    for flag, expected in ((False, None), (True, torch.bfloat16)):
        monkeypatch.setattr(probe, "fast_bf16", lambda device, flag=flag: flag)
        ids = torch.randint(2, 64, (1, 24))
        with torch.no_grad(), compress(llama, press_from("kvzip", ratio=0.5, tokenizer=word_tokenizer)):
            llama(ids, past_key_values=DynamicCache(config=llama.config))
        assert seen[-1] is expected
