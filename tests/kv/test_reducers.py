"""Reducers: low-precision storage (KIVI layout, real packed bytes), mass-preserving merging, CaM, KVCrush."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.cache_utils import DynamicLayer

from tests.conftest import kv_options, tiny_llama
from tokensift.errors import MethodUnsupportedError, ParameterError
from tokensift.kv import compress
from tokensift.kv.api import press_from
from tokensift.kv.bench import prefill, variants
from tokensift.kv.cache import MaskedLayer, RaggedLayer, dense_cache, generate_inputs
from tokensift.kv.lowbits import QuantizedLayer
from tokensift.kv.methods.kvcrush import representatives
from tokensift.kv.qa import answer, compress_context
from tokensift.methods import build, list_methods
from tokensift.reduce.kvmerge import add_values, fold_into_kept, nearest_kept, next_kept
from tokensift.reduce.quantize import dequantize, packed_bytes_per_token, quantize
from tokensift.select import composite_indices


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 70), bits=st.sampled_from([2, 4, 8]), per_channel=st.booleans(), seed=st.integers(0, 99))
def test_quantization_round_trips_within_half_a_step(n, bits, per_channel, seed):
    x = torch.randn(2, n, 64, generator=torch.Generator().manual_seed(seed)) * 3
    packed = quantize(x, bits, 32, per_channel=per_channel)
    back = dequantize(packed)
    assert back.shape == x.shape and back.dtype == x.dtype
    step = packed.scale.float().max()
    assert (back - x).abs().max() <= step / 2 + 2e-3 * x.abs().max()
    assert packed.codes.dtype == torch.uint8 and packed.codes.shape[-1] == 64 * bits // 8  # really packed


def test_packed_bytes_are_the_codes_scales_and_zero_points():
    x = torch.randn(3, 64, 64)
    keys, values = quantize(x, 2, 32, per_channel=True), quantize(x, 2, 32, per_channel=False)
    # keys: 64 tokens x 64 channels x 2 bits + per channel an fp16 scale and zero per 32 tokens
    assert keys.nbytes() == 3 * (64 * 16 + 2 * 64 * 2 * 2)
    assert values.nbytes() == 3 * (64 * 16 + 64 * 2 * 2 * 2)  # per token, two groups of 32 channels
    assert keys.nbytes() + values.nbytes() == 3 * 64 * packed_bytes_per_token(64, 2, 32)
    with pytest.raises(ParameterError, match="bits"):
        quantize(x, 3, 32, per_channel=True)


def _layer(seed=0, ragged=False):
    g = torch.Generator().manual_seed(seed)
    keys, values = torch.randn(1, 2, 40, 64, generator=g), torch.randn(1, 2, 40, 64, generator=g)
    first = torch.tensor([0, 3, 7, 20, 39]) if not ragged else torch.tensor([0, 3, 7, 20, 30, 39])
    selection = [[first, torch.tensor([1, 2, 10, 38, 39])]]
    return keys, values, selection, QuantizedLayer.quantized(keys, values, selection, [0], bits=2, group=32)


@pytest.mark.parametrize("ragged", [False, True])
def test_quantized_layer_attends_over_its_kept_tokens_exactly_and_the_rest_dequantized(ragged):
    keys, values, selection, layer = _layer(ragged=ragged)
    assert layer.dense != ragged
    query = torch.randn(1, 4, 1, 64)
    out, _ = layer.attend(query, 0.125)
    for h, kept in enumerate(selection[0]):
        rest = torch.tensor([i for i in range(40) if i not in kept.tolist()])
        low_k = dequantize(quantize(keys[0, h, rest], 2, 32, per_channel=True))
        low_v = dequantize(quantize(values[0, h, rest], 2, 32, per_channel=False))
        k, v = torch.cat([low_k, keys[0, h, kept]]), torch.cat([low_v, values[0, h, kept]])
        expected = torch.softmax(query[0, 2 * h : 2 * h + 2, 0] @ k.T * 0.125, -1) @ v
        torch.testing.assert_close(out[0, 0, 2 * h : 2 * h + 2], expected, rtol=1e-4, atol=1e-5)
    assert layer.lengths().tolist() == [[40, 40]]
    assert layer.full_lengths().tolist() == [[len(s) for s in selection[0]]]


@pytest.mark.parametrize("n_queries", [1, 3])
def test_packed_heads_of_different_lengths_attend_as_each_head_dequantized(n_queries):
    g = torch.Generator().manual_seed(3)
    keys, values = torch.randn(2, 3, 75, 64, generator=g), torch.randn(2, 3, 75, 64, generator=g)
    counts = [[5, 40, 12], [33, 1, 70]]  # full-precision tokens per (row, head): packed 70, 35, 63 / 42, 74, 5
    selection = [[torch.randperm(75, generator=g)[:k].sort().values for k in row] for row in counts]
    layer = QuantizedLayer.quantized(keys, values, selection, [0, 0], bits=2, group=32)
    assert layer.flat is not None and layer.low_lengths().tolist() == [[70, 35, 63], [42, 74, 5]]
    separate = [
        quantize(keys[b, h, rest], 2, 32, per_channel=True).nbytes()
        + quantize(values[b, h, rest], 2, 32, per_channel=False).nbytes()
        for b, row in enumerate(selection)
        for h, kept in enumerate(row)
        for rest in [torch.tensor([i for i in range(75) if i not in kept.tolist()])]
    ]
    full = sum(len(kept) for row in selection for kept in row) * 64 * 4 * 2
    assert layer.nbytes() == full + sum(separate)  # one allocation per row, the same bytes as one per head
    new_k, new_v = torch.randn(2, 3, n_queries, 64, generator=g), torch.randn(2, 3, n_queries, 64, generator=g)
    for b in range(2):  # the new tokens, as update() appends them inside a session
        for h in range(3):
            layer.segments_k[b][h] = torch.cat([layer.segments_k[b][h], new_k[b, h]])
            layer.segments_v[b][h] = torch.cat([layer.segments_v[b][h], new_v[b, h]])
    query = torch.randn(2, 9, n_queries, 64, generator=g)
    out, _ = layer.attend(query, 0.125)
    expected, _ = RaggedLayer.attend(layer, query, 0.125)  # per (row, head): dequantize, concatenate, attend
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_quantized_layer_stores_its_budget_in_bytes():
    keys, values = torch.randn(1, 3, 1024, 64), torch.randn(1, 3, 1024, 64)
    press = build("kv", "quant2:knorm", ratio=0.5)
    for fraction in (0.125, 0.25, 0.5):
        keep = press.keep_for_bytes(fraction, 64, 4)
        k = round(keep * 1024)
        selection = [[torch.arange(1024 - k, 1024)] * 3]
        layer = QuantizedLayer.quantized(keys, values, selection, [0], bits=2, group=32)
        full = keys.untyped_storage().nbytes() + values.untyped_storage().nbytes()
        assert layer.nbytes() / full == pytest.approx(fraction, rel=0.02)
    assert build("kv", "quant4:knorm", ratio=0.5).keep_for_bytes(0.125, 64, 4) is None  # 4 bits alone is 19 %


def test_a_quantized_session_generates_and_counts_packed_bytes():
    llama = tiny_llama(layers=2, context=256, kv_heads=2)
    ids = torch.randint(2, 64, (1, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), compress(llama, "quant2:knorm", ratio=0.75) as session:
        out = llama.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, 68)
    record = session.stats.layers[0]
    assert record.kept == [[16, 16]]
    head_dim = llama.config.hidden_size // llama.config.num_attention_heads
    # 16 kept tokens at 4 bytes x 2 (k, v) x head dim, 48 packed ones; per (layer, head)
    packed = quantize(torch.zeros(48, head_dim), 2, 32, per_channel=True).nbytes()
    packed += quantize(torch.zeros(48, head_dim), 2, 32, per_channel=False).nbytes()
    assert record.bytes_after == 2 * (16 * head_dim * 4 * 2 + packed)


def test_mass_preserving_merge_reproduces_the_reference_querys_output():
    g = torch.Generator().manual_seed(0)
    keys, values, query = (
        torch.randn(30, 16, generator=g),
        torch.randn(30, 16, generator=g),
        torch.randn(16, generator=g),
    )
    logits = keys @ query
    weights = torch.softmax(logits, -1)
    kept = torch.tensor([2, 9, 17, 25])
    target = nearest_kept(keys, kept)
    merged_k, merged_v, log_mass = fold_into_kept(keys, values, kept, weights, target)
    full = weights @ values
    after = torch.softmax(merged_k @ query + log_mass, -1) @ merged_v
    torch.testing.assert_close(after, full, rtol=1e-5, atol=1e-5)
    evicted = torch.softmax(logits[kept], -1) @ values[kept]
    assert (evicted - full).norm() > 10 * (after - full).norm()
    assert target[kept].tolist() == [0, 1, 2, 3]
    assert (nearest_kept(keys, kept, min_similarity=0.99) == -1).sum() == 26  # nothing that similar: dropped


def test_cam_restores_the_numerator_of_what_it_evicts():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(10, 4, generator=g)
    weights = torch.tensor([0.5, 0.05, 0.3, 0.02, 0.01, 0.04, 0.03, 0.02, 0.02, 0.01])
    kept = torch.tensor([0, 2, 5])
    target = next_kept(10, kept)
    assert target.tolist() == [0, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    merged = add_values(values, kept, weights, target)
    assert torch.allclose(weights[kept] @ merged, weights @ values, atol=1e-6)  # every ratio is below 1 here


def test_merged_cache_attends_the_same_ragged_and_placed_in_a_masked_batch():
    llama = tiny_llama(layers=2, context=256)
    ids = torch.randint(2, 64, (1, 40), generator=torch.Generator().manual_seed(2)).tolist()[0]
    pre = prefill(llama, ids)
    (variant,) = variants(pre, ["merge:adakv:keydiff"], [0.75], lambda m, r: True)
    assert variant.built is not None
    query = torch.randn(1, 4, 1, 8)
    for idx, layer in variant.built.items():
        assert isinstance(layer, RaggedLayer) and layer.segments_b is not None
        masked = MaskedLayer(pre.views[idx].keys, pre.views[idx].values, torch.ones(1, 2, 40, dtype=torch.bool))
        masked.place(0, layer)
        torch.testing.assert_close(masked.attend(query, 0.3)[0], layer.attend(query, 0.3)[0], rtol=1e-5, atol=1e-6)


REDUCING = [m.name for m in list_methods("kv") if m.cls.reducer or m.name == "kvcrush"]


@pytest.mark.parametrize("spec", [*REDUCING, "quant4:kvzip"])
def test_reducing_methods_answer_through_generate(spec, word_tokenizer):
    llama = tiny_llama(layers=2, context=256)
    ids = torch.randint(2, 64, (2, 48), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # a left-padded row compresses as if it ran alone
    with torch.no_grad(), compress(llama, spec, ratio=0.75, **kv_options(spec, word_tokenizer)) as session:
        out = llama.generate(ids, attention_mask=mask, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (2, 51)
    totals = [sum(sum(record.kept[row]) for record in session.stats.layers) for row in range(2)]
    assert totals == [2 * 2 * 12, 2 * 2 * 11]  # layers x heads x 25 % of each row (shared freely by kvzip)


def test_one_reducer_per_composition():
    with pytest.raises(ParameterError, match="one reducer per composition"):
        build("kv", "quant2:mikv", ratio=0.5)
    with pytest.raises(ParameterError, match="bits"):
        build("kv", "quant", ratio=0.5, bits=3)
    with pytest.raises(ParameterError, match="takes no option 'bits'"):
        build("kv", "snapkv", ratio=0.5, bits=2)


def test_kvcrush_keeps_one_representative_per_behaviour_bucket():
    scores = torch.tensor([9.0, 8.0, 1.0, 0.9, 0.8, 0.1, 0.2, 0.3])
    signatures = torch.tensor([[1, 1], [1, 1], [0, 0], [0, 0], [1, 0], [1, 0], [0, 1], [0, 1]], dtype=torch.bool)
    chosen = representatives(scores, signatures, torch.arange(2, 8), 3)
    # anchor = rounded mean signature (0, 0); order by distance, then score: 2 3 | 4 7 | 6 5 -> the first of each
    assert sorted(chosen.tolist()) == [2, 4, 6]
    press = build("kv", "kvcrush:knorm", ratio=0.5, share=0.5)
    assert math.isclose(press.share, 0.5)


def test_composite_tokens_give_every_head_of_a_layer_the_same_length_under_one_model_budget():
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(3, 20, generator=g), torch.rand(3, 20, generator=g) * 5, torch.rand(3, 20, generator=g)]
    chosen = composite_indices(scores, 6, protect_first=1)
    lengths = [{len(head) for head in layer} for layer in chosen]
    assert all(len(per_layer) == 1 for per_layer in lengths)  # dense per layer
    assert sum(len(layer[0]) for layer in chosen) == 3 * 6  # layers x keep composites
    assert len(chosen[1][0]) > len(chosen[0][0]) and len(chosen[1][0]) > len(chosen[2][0])  # high scores keep more
    for layer, layer_scores in zip(chosen, scores, strict=True):
        for h, kept in enumerate(layer):
            assert 0 in kept.tolist()  # protected
            rest = layer_scores[h, 1:].topk(len(kept) - 1).indices + 1
            assert sorted(kept.tolist()) == sorted([0, *rest.tolist()])  # each head its own best tokens


def test_kvcompose_cache_decodes_with_plain_generate_and_no_tokensift_attention():
    llama = tiny_llama(layers=3, context=256)
    context = torch.randint(2, 64, (1, 60), generator=torch.Generator().manual_seed(0))
    question = torch.randint(2, 64, (1, 5), generator=torch.Generator().manual_seed(1))
    press = press_from("kvcompose", ratio=0.75, window=4, kernel=3)
    reference = answer(llama, compress_context(llama, context, press), question, max_new_tokens=6).ids
    compressed = compress_context(llama, context, press)
    lengths = [layer.keys.shape[2] for layer in compressed.cache.layers]
    assert len(set(lengths)) > 1 and sum(lengths) == 3 * 15  # a global layer budget, dense per layer
    dense = dense_cache(compressed.cache)
    assert all(type(layer) is DynamicLayer for layer in dense.layers)
    with torch.no_grad():  # outside any tokensift block: plain transformers attention
        out = llama.generate(question, **generate_inputs(dense, 60, 5), max_new_tokens=6, do_sample=False)
    assert torch.equal(out[:, 5:], reference)
    with pytest.raises(MethodUnsupportedError, match="kvcompose"):
        dense_cache(compress_context(llama, context, press_from("adakv:knorm", ratio=0.75)).cache)


def test_a_decoding_step_reuses_its_buffer_without_aliasing_and_handles_a_head_with_nothing_packed():
    """A decoding step dequantizes each layer's packed part into one reused buffer: a second layer's step must not
    change the first one's output, and a head that keeps every token at full precision (nothing packed) attends
    over those alone, as the per-head reference does."""
    g = torch.Generator().manual_seed(5)
    layers, expected = [], []
    for counts in ([75, 20, 3], [10, 40, 60]):  # head 0 of the first layer packs nothing
        keys, values = torch.randn(1, 3, 75, 64, generator=g), torch.randn(1, 3, 75, 64, generator=g)
        selection = [[torch.randperm(75, generator=g)[:k].sort().values for k in counts]]
        layers.append(QuantizedLayer.quantized(keys, values, selection, [0], bits=2, group=32))
    assert layers[0].low_lengths().tolist() == [[0, 55, 72]]
    query = torch.randn(1, 9, 1, 64, generator=g)
    outs = [layer.attend(query, 0.125)[0] for layer in layers]
    first = outs[0].clone()
    layers[1].attend(query * 2, 0.125)  # the same buffer, other contents
    torch.testing.assert_close(outs[0], first, rtol=0, atol=0)
    for layer, out in zip(layers, outs, strict=True):
        expected, _ = RaggedLayer.attend(layer, query, 0.125)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_a_dense_decoding_step_over_a_batch_matches_the_per_head_reference():
    """Two rows that keep as many tokens per head (a dense packed part ``[B, Hkv, ...]``): one decoding step
    through the fused kernel gives each row what dequantizing its heads and attending them one by one gives."""
    g = torch.Generator().manual_seed(6)
    keys, values = torch.randn(2, 3, 70, 64, generator=g), torch.randn(2, 3, 70, 64, generator=g)
    selection = [[torch.randperm(70, generator=g)[:12].sort().values for _ in range(3)] for _ in range(2)]
    layer = QuantizedLayer.quantized(keys, values, selection, [0, 0], bits=2, group=32)
    assert layer.dense and layer.low_lengths().tolist() == [[58, 58, 58], [58, 58, 58]]
    query = torch.randn(2, 9, 1, 64, generator=g)
    out, _ = layer.attend(query, 0.125)
    expected, _ = layer.attend(query, 0.125, need_weights=True)  # per (row, head) over dequantize(...)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_packed_attention_equals_attention_over_the_dequantized_segments():
    from tokensift.kv.cache import _ATTACHED

    layer = _layer(seed=4)[-1]
    _ATTACHED[0] += 1  # as inside a session, where the layer may grow
    try:
        layer.update(torch.randn(1, 2, 3, 64), torch.randn(1, 2, 3, 64))  # three new tokens, causal among themselves
    finally:
        _ATTACHED[0] -= 1
    query = torch.randn(1, 4, 3, 64)
    packed, _ = layer.attend(query, 0.125)  # dense: scales folded into the products
    looped, _ = layer.attend(query, 0.125, need_weights=True)  # per head over dequantize(...)
    torch.testing.assert_close(packed, looped, rtol=1e-4, atol=1e-5)


def test_a_row_with_nothing_to_pack_stores_no_codes():
    keys = torch.randn(1, 2, 0, 64)
    for per_channel in (True, False):
        packed = quantize(keys, 2, 32, per_channel=per_channel)
        assert packed.nbytes() == 0 and dequantize(packed).shape == (1, 2, 0, 64)


def test_a_head_wise_packed_session_attends_as_each_head_dequantized(monkeypatch):
    """``quant2:adakv`` (heads keep different counts) on a left-padded batch of two: the flat attend gives the
    same logits at every generated step as the per-head path that dequantizes each head and attends alone."""
    llama = tiny_llama(layers=2, context=256, kv_heads=2)
    ids = torch.randint(2, 64, (2, 80), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :9] = 0

    def generate():
        with torch.no_grad(), compress(llama, "quant2:adakv", ratio=0.75):
            return llama.generate(
                ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, do_sample=False, output_logits=True,
                return_dict_in_generate=True,
            )  # fmt: skip

    flat = generate()
    layers = [layer for layer in flat.past_key_values.layers if isinstance(layer, QuantizedLayer)]
    assert layers and all(layer.flat is not None for layer in layers)  # the heads packed different counts
    monkeypatch.setattr(
        QuantizedLayer,
        "attend",
        lambda self, q, s, need_weights=False: RaggedLayer.attend(self, q, s, need_weights=need_weights),
    )
    per_head = generate()
    assert torch.equal(flat.sequences, per_head.sequences)
    for ours, reference in zip(flat.logits, per_head.logits, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("ragged", "full"), [(False, 0.0), (True, 0.0), (True, 0.25), (True, 0.6)])
def test_quantized_pruning_packs_exactly_the_kept_tokens_and_drops_the_rest(ragged, full):
    """``qprune``: the wrapped press's kept tokens are packed at 4 bits (with ``full``, each head's most recent
    quarter of them stays at full precision), the rest is gone; a decoding step (its own token appended at full
    precision) attends as the per-head dequantized reference, and the bytes are the packed codes, scales and zero
    points plus the full-precision tokens."""
    g = torch.Generator().manual_seed(7)
    keys, values = torch.randn(1, 3, 90, 64, generator=g), torch.randn(1, 3, 90, 64, generator=g)
    counts = ([1, 17, 64] if full == 0.6 else [40, 17, 64]) if ragged else [40, 40, 40]  # 0.6: head 0 packs nothing
    selection = [[torch.randperm(90, generator=g)[:k].sort().values for k in counts]]
    press = build("kv", "qprune:knorm", ratio=0.5, full=full)
    layer = press.build(keys, values, selection, [None], [0])
    assert press.bits == 4 and not press.evicts
    recent = [round(full * k) for k in counts]
    assert layer.low_lengths().tolist() == [[k - r for k, r in zip(counts, recent, strict=True)]]
    assert layer.full_lengths().tolist() == [recent]
    assert (layer.flat is not None) == ragged and layer.kept_lengths().tolist() == [counts]
    split = [(kept[: len(kept) - r], kept[len(kept) - r :]) for kept, r in zip(selection[0], recent, strict=True)]
    packed = sum(
        quantize(keys[0, h, low], 4, 32, per_channel=True).nbytes()
        + quantize(values[0, h, low], 4, 32, per_channel=False).nbytes()
        + 2 * high.numel() * 64 * 4
        for h, (low, high) in enumerate(split)
    )
    assert layer.nbytes() == packed
    from tokensift.kv.cache import _ATTACHED

    _ATTACHED[0] += 1  # as inside a session, where the layer grows by the decoded token
    try:
        new_k, new_v = torch.randn(1, 3, 1, 64, generator=g), torch.randn(1, 3, 1, 64, generator=g)
        layer.update(new_k, new_v)
    finally:
        _ATTACHED[0] -= 1
    # ragged: heads of different totals, attended per head beside the row's packed part dequantized at once
    assert layer.lengths().tolist() == [[k + 1 for k in counts]]
    query = torch.randn(1, 9, 1, 64, generator=g)
    out, _ = layer.attend(query, 0.125)
    for h, (low, high) in enumerate(split):
        k = torch.cat([dequantize(quantize(keys[0, h, low], 4, 32, per_channel=True)), keys[0, h, high], new_k[0, h]])
        v = torch.cat([dequantize(quantize(values[0, h, low], 4, 32, per_channel=False)), values[0, h, high]])
        v = torch.cat([v, new_v[0, h]])
        expected = torch.softmax(query[0, 3 * h : 3 * h + 3, 0] @ k.T * 0.125, -1) @ v
        torch.testing.assert_close(out[0, 0, 3 * h : 3 * h + 3], expected, rtol=1e-4, atol=1e-5)


def test_quantized_pruning_meets_a_bytes_budget_below_what_packing_every_token_costs():
    keys, values = torch.randn(1, 3, 1024, 64), torch.randn(1, 3, 1024, 64)
    press = build("kv", "qprune:knorm", ratio=0.5)
    full = keys.untyped_storage().nbytes() + values.untyped_storage().nbytes()
    for fraction in (0.1, 0.125, 0.15):  # far below, the keys' padding to whole groups of 32 tokens tells
        k = round(press.keep_for_bytes(fraction, 64, 4) * 1024)
        layer = press.build(keys, values, [[torch.arange(1024 - k, 1024)] * 3], [None], [0])
        assert layer.nbytes() / full == pytest.approx(fraction, rel=0.02)
    assert press.keep_for_bytes(0.125, 64, 4) == pytest.approx(0.8)  # 4 bits + fp16 stats: 80 of 512 bytes
    assert press.keep_for_bytes(0.25, 64, 4) is None  # every token packed stores 15.6 %: quant4's budget
    assert build("kv", "qprune:knorm", ratio=0.5, bits=2).keep_for_bytes(0.0625, 64, 4) == pytest.approx(2 / 3)
    half = build("kv", "qprune:knorm", ratio=0.5, full=0.5)  # half the kept tokens full, half at 4 bits
    assert half.keep_for_bytes(0.25, 64, 4) == pytest.approx(0.25 / (0.5 + 0.5 * 80 / 512))
