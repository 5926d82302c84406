import pytest
import torch
from transformers import (
    DynamicCache,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from tests.conftest import kv_options, tiny_llama
from tokensift.errors import ContextTooLongError, MethodUnsupportedError, ParameterError, UnsupportedArchitectureError
from tokensift.hooks import _HANDLERS
from tokensift.kv import bounded, compress, press_from
from tokensift.kv.cache import RaggedLayer, cache_bytes
from tokensift.kv.methods.knorm import Knorm
from tokensift.methods import names
from tokensift.scores import key_norm_score
from tokensift.select import topk_indices

METHODS = names("kv", stage="cache")  # prefill filters and decoding policies: tests/kv/test_long.py
SMALL = {"window": 4, "kernel": 3}  # observation window options for 40-token inputs


_options = kv_options


def _tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)
    if kind == "llama":
        return tiny_llama(layers=2)
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=2, max_position_embeddings=128, **common)).eval()
    if kind == "mistral":
        config = MistralConfig(num_hidden_layers=2, max_position_embeddings=128, sliding_window=None, **common)
        return MistralForCausalLM(config).eval()
    config = Gemma3TextConfig(
        num_hidden_layers=3,
        head_dim=8,
        max_position_embeddings=128,
        sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        **common,
    )
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral", "gemma3"])
def test_ratio_zero_is_identical_and_compression_runs(kind):
    model = _tiny(kind)
    ids = torch.randint(2, 64, (1, 40))
    with torch.no_grad():
        reference = model.generate(
            ids, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
        with compress(model, "snapkv", ratio=0.0, **SMALL):
            same = model.generate(
                ids, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True
            )
        assert all(torch.equal(a, b) for a, b in zip(reference.logits, same.logits, strict=True))
        cache = DynamicCache(config=model.config)
        with compress(model, "snapkv", ratio=0.5, **SMALL) as session:
            model(ids, past_key_values=cache)
            model.generate(ids, max_new_tokens=3, do_sample=False)
    ragged = [isinstance(layer, RaggedLayer) for layer in cache.layers]
    assert ragged == ([False, False, True] if kind == "gemma3" else [True, True])  # sliding layers untouched
    assert session.stats.kept_fraction == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_generates_and_bytes_match_the_kept_fraction(llama, method, word_tokenizer):
    ids = torch.randint(2, 64, (1, 48))
    with torch.no_grad(), compress(llama, method, ratio=0.75, **_options(method, word_tokenizer)) as session:
        out = llama.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, 51)
    if session.policy.press.evicts:
        assert session.stats.kept_fraction == pytest.approx(0.25, abs=0.02)
    elif method == "qprune":  # the kept 25 % all packed at 4 bits (tests/kv/test_reducers.py counts the bytes)
        assert 0 < session.stats.kept_fraction < 0.25
    else:  # packed or merged (tests/kv/test_reducers.py counts their bytes)
        assert 0.25 <= session.stats.kept_fraction < 1.0
    assert sum(sum(sum(row) for row in rec.kept) for rec in session.stats.layers) == 2 * 2 * 12


def test_kept_indices_are_exactly_the_selectors_choice(llama):
    ids = torch.randint(2, 64, (1, 30))
    full = DynamicCache(config=llama.config)
    compressed = DynamicCache(config=llama.config)
    with torch.no_grad():
        llama(ids, past_key_values=full)
        with compress(llama, Knorm(ratio=0.6, protect_first=2)):
            llama(ids, past_key_values=compressed)
    for full_layer, layer in zip(full.layers, compressed.layers, strict=True):
        keys = full_layer.keys[0]
        chosen = topk_indices(key_norm_score(keys), 12, protect_first=2)
        for h in range(keys.shape[0]):
            stored_keys, stored_values = layer.segment(0, h)
            assert torch.equal(stored_keys, keys[h, chosen[h]])
            assert torch.equal(stored_values, full_layer.values[0, h, chosen[h]])


@pytest.mark.parametrize("n_new", [3, 1])  # a prompt after compression, a decoding step (one fused call per head)
def test_ragged_attention_equals_masked_reference(n_new):
    torch.manual_seed(1)
    n, dim, kv_heads, group = 24, 8, 2, 3
    keys, values = torch.randn(1, kv_heads, n + n_new, dim), torch.randn(1, kv_heads, n + n_new, dim)
    kept = [torch.tensor([0, 3, 4, 9, 20]), torch.arange(0, n, 2)]  # heads keep different counts
    layer = RaggedLayer.from_selection(keys[:, :, :n], values[:, :, :n], [kept])
    from tokensift.kv.cache import _ATTACHED

    _ATTACHED[0] += 1
    try:
        layer.update(keys[:, :, n:], values[:, :, n:])
    finally:
        _ATTACHED[0] -= 1
    query = torch.randn(1, kv_heads * group, n_new, dim)
    output, weights = layer.attend(query, dim**-0.5, need_weights=n_new > 1)
    for h, idx in enumerate(kept):
        visible = torch.zeros(n + n_new, dtype=torch.bool)
        visible[idx] = True
        for g in range(group):
            for i in range(n_new):
                allowed = visible.clone()
                allowed[n : n + i + 1] = True
                logits = (query[0, h * group + g, i] @ keys[0, h].T) * dim**-0.5
                probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1)
                expected = probs @ values[0, h]
                assert torch.allclose(output[0, i, h * group + g], expected, atol=1e-5)
    if n_new > 1:
        assert weights is not None and weights[0][0].shape == (len(kept[0]) + n_new,)
    assert layer.nbytes() == (len(kept[0]) + len(kept[1]) + 2 * n_new) * dim * 4 * 2


def test_left_padded_batch_equals_each_row_alone(llama, word_tokenizer):
    torch.manual_seed(2)
    rows = [torch.randint(2, 64, (30,)), torch.randint(2, 64, (22,))]
    ids = torch.zeros(2, 30, dtype=torch.long)
    mask = torch.zeros(2, 30, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, 30 - len(row) :], mask[b, 30 - len(row) :] = row, 1
    for method in METHODS:
        kwargs = dict(
            max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0
        )
        with torch.no_grad(), compress(llama, method, ratio=0.5, **_options(method, word_tokenizer)):
            batch = llama.generate(ids, attention_mask=mask, **kwargs)
            alone = [llama.generate(row[None], **kwargs) for row in rows]
        for b in range(2):
            for step, logits in enumerate(batch.logits):
                assert torch.allclose(logits[b], alone[b].logits[step][0], atol=1e-4), (method, b, step)


def test_hooks_removed_after_an_exception(llama):
    ids = torch.randint(2, 64, (1, 20))
    with pytest.raises(RuntimeError, match="boom"), compress(llama, "knorm", ratio=0.5):
        with torch.no_grad():
            llama(ids)
        raise RuntimeError("boom")
    assert llama.config._attn_implementation == "sdpa"
    assert not _HANDLERS
    assert all(not m._forward_pre_hooks for m in llama.modules())


def test_bad_input_raises_typed_errors(llama):
    ids = torch.randint(2, 64, (1, 20))
    with pytest.raises(ParameterError, match=r"\[0, 1\)"):
        press_from("snapkv", ratio=1.0)
    with pytest.raises(ParameterError, match="larger than the input"), compress(llama, "knorm", keep_tokens=50):
        llama(ids)
    with pytest.raises(ContextTooLongError), compress(llama, "knorm", ratio=0.5):
        llama(torch.randint(2, 64, (1, 130)))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64)).eval()
    with pytest.raises(UnsupportedArchitectureError, match="supported: llama"), compress(gpt2, "knorm", ratio=0.5):
        pass
    with pytest.raises(MethodUnsupportedError, match="h2o"), bounded(llama, "snapkv", max_cache_tokens=64):
        pass
    with (
        pytest.raises(ParameterError, match="protected"),
        bounded(llama, "streaming_llm", max_cache_tokens=10, every=8),
    ):
        pass


def test_cache_bytes_counts_dense_and_ragged(llama):
    ids = torch.randint(2, 64, (1, 40))
    full, small = DynamicCache(config=llama.config), DynamicCache(config=llama.config)
    with torch.no_grad():
        llama(ids, past_key_values=full)
        with compress(llama, "adakv", ratio=0.5, **SMALL):
            llama(ids, past_key_values=small)
    assert cache_bytes(small) == pytest.approx(cache_bytes(full) / 2, rel=0.02)


def test_dense_ragged_layer_attention_equals_masked_reference():
    from tokensift.kv.cache import _ATTACHED, MaskedLayer

    torch.manual_seed(4)
    keys, values = torch.randn(2, 2, 20, 8), torch.randn(2, 2, 20, 8)
    kept = [[torch.arange(0, 20, 2), torch.arange(1, 20, 2)], [torch.arange(10), torch.arange(10, 20)]]
    ragged = RaggedLayer.from_selection(keys, values, kept)
    valid = torch.zeros(2, 2, 20, dtype=torch.bool)
    for b, row in enumerate(kept):
        for h, idx in enumerate(row):
            valid[b, h, idx] = True
    masked = MaskedLayer(keys, values, valid, extra=2)
    assert ragged.dense and ragged.nbytes() == 2 * 2 * 10 * 8 * 4 * 2
    new_k, new_v, query = torch.randn(2, 2, 2, 8), torch.randn(2, 2, 2, 8), torch.randn(2, 6, 2, 8)
    _ATTACHED[0] += 1
    try:
        ragged.update(new_k, new_v)
        masked.update(new_k, new_v)
    finally:
        _ATTACHED[0] -= 1
    dense_out, _ = ragged.attend(query, 0.3)
    loop_out, _ = ragged.attend(query, 0.3, need_weights=True)
    reference, _ = masked.attend(query, 0.3)
    assert torch.allclose(dense_out, reference, atol=1e-5) and torch.allclose(loop_out, reference, atol=1e-5)
    assert torch.equal(masked.lengths(), ragged.lengths())
