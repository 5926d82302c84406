"""Long contexts: chunked prefill (bounded or not), prefill filters and sparse decoding, on tiny models."""

import pytest
import torch

from tests.conftest import tiny_gemma3, tiny_llama
from tokensift.errors import MethodUnsupportedError, ParameterError
from tokensift.hooks import observe_attention
from tokensift.kv import press_from
from tokensift.kv.cache import RaggedLayer
from tokensift.kv.chunked import chunk_reason
from tokensift.kv.decode import sparse_decoding
from tokensift.kv.filter import filtered_prefill
from tokensift.kv.qa import answer, compress_context
from tokensift.kv.sparse import allowed_positions, attend_positions, top_positions
from tokensift.methods import compositions, names

IDS = torch.randint(2, 64, (1, 90), generator=torch.Generator().manual_seed(3))
QUESTION = torch.tensor([[5, 9, 11]])


def _kept(cache, layer: int) -> list[int]:
    found = cache.layers[layer]
    return found.lengths()[0].tolist() if isinstance(found, RaggedLayer) else [found.keys.shape[2]]


@pytest.mark.parametrize("model", [tiny_llama(layers=2), tiny_gemma3(window=8)], ids=["llama", "gemma3"])
def test_chunked_prefill_without_compression_equals_one_pass(model):
    none = press_from("knorm", ratio=0.0)
    whole = compress_context(model, IDS, none)
    seen: list[tuple[int, int]] = []
    chunked = compress_context(model, IDS, none, chunk_size=32, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(32, 90), (64, 90), (90, 90)]
    torch.testing.assert_close(chunked.last_logits, whole.last_logits, atol=1e-5, rtol=1e-4)
    a = answer(model, whole, QUESTION, max_new_tokens=6).ids
    b = answer(model, chunked, QUESTION, max_new_tokens=6).ids
    assert a.tolist() == b.tolist()


def test_compression_after_the_last_chunk_keeps_what_one_pass_keeps():
    model = tiny_llama(layers=2)
    for method in ("snapkv", "adakv:snapkv"):
        press = press_from(method, ratio=0.6)
        whole = compress_context(model, IDS, press)
        chunked = compress_context(model, IDS, press, chunk_size=40)
        assert chunked.stats.as_dict()["tokens_kept"] == whole.stats.as_dict()["tokens_kept"], method
        for layer in range(2):
            assert _kept(chunked.cache, layer) == _kept(whole.cache, layer)
            for head in range(2):
                torch.testing.assert_close(
                    chunked.cache.layers[layer].segment(0, head)[0], whole.cache.layers[layer].segment(0, head)[0]
                )


def test_bounded_chunked_prefill_never_holds_more_than_budget_plus_chunk(monkeypatch):
    model = tiny_llama(layers=2)
    held: list[int] = []
    original = RaggedLayer.update

    def watched(self, key_states, value_states, *args, **kwargs):
        out = original(self, key_states, value_states, *args, **kwargs)
        held.append(int(self.lengths().max()))
        return out

    monkeypatch.setattr(RaggedLayer, "update", watched)
    press = press_from("streaming_llm", ratio=0.75)  # 90 tokens -> 22 kept per head
    done = compress_context(model, IDS, press, chunk_size=16, bounded=True)
    keep = press.budgeted.tokens(90)
    assert held and max(held) <= keep + 16
    assert all(n == keep for n in done.stats.layers[0].kept[0])
    per_token = 2 * 2 * 8 * 4  # keys + values, 2 KV heads, head_dim 8, fp32
    assert done.stats.bytes_before == 2 * per_token * 90  # two layers
    assert done.stats.bytes_after == 2 * per_token * keep
    assert done.peak_cache_bytes == 2 * per_token * (keep + 16)  # each layer at most budget + one chunk
    # StreamingLLM keeps the sink and the newest tokens whether it compresses once or after every chunk
    once = compress_context(model, IDS, press)
    first = done.cache.layers[0].segment(0, 0)[0]
    torch.testing.assert_close(first[-8:], once.cache.layers[0].segment(0, 0)[0][-8:])


def test_bounded_refuses_a_press_that_needs_the_whole_context():
    model = tiny_llama(layers=2)
    assert chunk_reason(press_from("snapkv", ratio=0.5)) is None
    assert "every query row" in (chunk_reason(press_from("h2o", ratio=0.5)) or "")
    with pytest.raises(MethodUnsupportedError, match="composition"):
        compress_context(model, IDS, press_from("adakv:snapkv", ratio=0.5), chunk_size=16, bounded=True)


@pytest.mark.parametrize("method", ["gemfilter", "promptdistill"])
def test_filters_keep_the_budget_and_answer_from_kept_tokens(method):
    model = tiny_llama(layers=4)
    press = press_from(method, ratio=0.75)
    done = filtered_prefill(model, IDS, press, chunk_size=32)
    k = press.budgeted.tokens(90)
    assert done.kept.numel() == k and torch.equal(done.kept, done.kept.sort().values)
    assert done.length == (k if method == "gemfilter" else 90)
    for layer in done.cache.layers:
        assert layer.keys.shape[2] == k  # every layer holds the kept tokens only
    context = compress_context(model, IDS, press, chunk_size=32)
    assert answer(model, context, QUESTION, max_new_tokens=4).ids.shape == (1, 4)


def test_gemfilter_equals_a_prefill_of_the_kept_tokens():
    model = tiny_llama(layers=4)
    press = press_from("gemfilter", ratio=0.5, select_layer=1)
    done = filtered_prefill(model, IDS, press)
    short = compress_context(model, IDS[:, done.kept], press_from("knorm", ratio=0.0))
    torch.testing.assert_close(done.logits, short.last_logits)
    # the selection: the last query's dot products with every key at layer 1, summed over the heads
    seen = {}

    def observer(module, query, key, value, mask, kwargs):
        seen["q"], seen["k"] = query, key

    with torch.no_grad(), observe_attention(model, {1: observer}):
        model(IDS)
    products = torch.einsum("hd,htd->t", seen["q"][0, :, -1], seen["k"][0].repeat_interleave(2, dim=0))
    assert done.kept.tolist() == products.topk(45).indices.sort().values.tolist()


@pytest.mark.parametrize("pooling", [5, 1])
def test_promptdistill_selects_as_the_reference_code_does(pooling):
    """The authors' selection written out: the last token's q.k times the scaling, mean over heads, its own
    entry zeroed and an average pool of width 5 (count_include_pad), top k - 1 before it plus the last token."""
    model = tiny_llama(layers=4)
    press = press_from("promptdistill", ratio=0.5, select_layer=1, pooling=pooling)
    done = filtered_prefill(model, IDS, press)
    seen = {}

    def observer(module, query, key, value, mask, kwargs):
        seen["q"], seen["k"], seen["scaling"] = query, key, kwargs.get("scaling") or query.shape[-1] ** -0.5

    with torch.no_grad(), observe_attention(model, {1: observer}):
        model(IDS)
    n = IDS.shape[1]
    logits = torch.einsum("hd,htd->ht", seen["q"][0, :, -1], seen["k"][0].repeat_interleave(2, dim=0))
    mean = (logits * seen["scaling"]).mean(0)
    if pooling > 1:
        mean[-1] = 0.0
        padded = torch.cat([torch.zeros(2), mean, torch.zeros(2)])
        mean = torch.stack([padded[i : i + 5].sum() / 5 for i in range(n)])
    k = press.budgeted.tokens(n)
    expected = sorted([*mean[:-1].topk(k - 1).indices.tolist(), n - 1])
    assert done.kept.tolist() == expected
    with pytest.raises(ParameterError, match="odd"):
        press_from("promptdistill", ratio=0.5, pooling=4)


def test_promptdistill_keeping_everything_is_the_full_prefill():
    model = tiny_gemma3(window=8, layers=4)
    full = compress_context(model, IDS, press_from("knorm", ratio=0.0))
    done = filtered_prefill(model, IDS, press_from("promptdistill", keep=1.0), chunk_size=32)
    torch.testing.assert_close(done.logits, full.last_logits, atol=1e-5, rtol=1e-4)


def promptdistill_reference(model, ids, kept, select, n_context, window):
    """PromptDistill in one uncached forward over ``ids`` (context then question), each layer's attention masked
    by hand: layers up to ``select`` see the whole context (the question's queries only the kept context tokens
    in full-attention layers, whose caches are cut), later layers only the kept context tokens and the question;
    sliding layers attend within ``window`` positions."""
    from tokensift.hooks import Route, attention_modules
    from tokensift.kv.model import layer_types

    n = ids.shape[1]
    pos = torch.arange(n)
    visible = torch.zeros(n, dtype=torch.bool)
    visible[kept] = True
    visible[n_context:] = True
    causal = pos[None, :] <= pos[:, None]
    in_window = pos[:, None] - pos[None, :] < window
    question = (pos >= n_context)[:, None]
    types = layer_types(model)

    def handler(idx):
        mask = causal & (in_window if types[idx] == "sliding_attention" else True)
        if idx > select:
            mask = mask & visible[None, :]
        elif types[idx] == "full_attention":
            mask = mask & (~question | visible[None, :])

        def attend(call):
            out = torch.nn.functional.scaled_dot_product_attention(
                call.query, call.key, call.value, attn_mask=mask, scale=call.scaling, enable_gqa=True
            )
            return out.transpose(1, 2).contiguous(), None

        return attend

    modules = attention_modules(model)
    with torch.no_grad(), Route(model, {m: handler(i) for i, m in enumerate(modules)}):
        return model(ids).logits[0]


@pytest.mark.parametrize("chunk", [None, 32])
def test_promptdistill_on_sliding_layers_equals_the_masked_reference(chunk):
    """Gemma-3: the later sliding layers slide over the kept tokens' positions, the first ones keep the whole
    context's window; logits after the context and after each question token equal the hand-masked forward."""
    from tokensift.kv.qa import continue_from

    model = tiny_gemma3(window=8, layers=4)
    press = press_from("promptdistill", ratio=0.6)
    done = filtered_prefill(model, IDS, press, chunk_size=chunk)
    n = IDS.shape[1]
    whole = torch.cat([IDS, QUESTION], dim=1)
    reference = promptdistill_reference(model, whole, done.kept, press.layer_for(model), n, window=8)
    torch.testing.assert_close(done.logits[0], reference[n - 1], atol=1e-4, rtol=1e-4)
    context = compress_context(model, IDS, press, chunk_size=chunk)
    asked = continue_from(model, context, QUESTION)[0]
    torch.testing.assert_close(asked, reference[n:], atol=1e-4, rtol=1e-4)
    assert answer(model, context, QUESTION, max_new_tokens=4).ids.shape == (1, 4)


def test_filter_layer_must_be_a_full_attention_layer():
    model = tiny_gemma3(window=8)
    assert press_from("gemfilter", ratio=0.5).layer_for(model) == 1
    with pytest.raises(ParameterError, match="not a full-attention layer"):
        press_from("gemfilter", ratio=0.5, select_layer=0).layer_for(model)
    with pytest.raises(ParameterError, match="later layers"):
        press_from("promptdistill", ratio=0.5, select_layer=3).layer_for(tiny_gemma3(window=8, layers=4))
    with pytest.raises(ParameterError, match="layers after it"):
        press_from("promptdistill", ratio=0.5).layer_for(model)
    assert press_from("promptdistill", ratio=0.5).layer_for(tiny_gemma3(window=8, layers=4)) == 1


def test_only_cache_methods_are_wrapped():
    other = set(names("kv", stage="prefill")) | set(names("kv", stage="decode"))
    assert len(other) == 4 and other.isdisjoint(names("kv", stage="cache"))
    assert not [spec for spec in compositions("kv") if spec.split(":")[-1] in other]
    with pytest.raises(ParameterError, match="cannot wrap"):
        press_from("adakv:tokenselect", ratio=0.5)


def test_top_positions_and_attention_over_them():
    scores = torch.tensor([[[0.1, 0.9, 0.3, 0.8, 0.0]]])
    assert top_positions(scores, 3).tolist() == [[[1, 3, 4]]]  # the newest always
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    every = torch.arange(5).expand(1, 2, 5)
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True, scale=0.3).transpose(1, 2)
    torch.testing.assert_close(attend_positions(q, k, v, every, 0.3), full)
    allowed = torch.tensor([[False, True, True, True, True]])
    masked = attend_positions(q, k, v, every, 0.3, allowed)
    torch.testing.assert_close(masked, attend_positions(q, k, v, torch.arange(1, 5).expand(1, 2, 4), 0.3))
    mask = torch.zeros(1, 1, 1, 5).masked_fill(~allowed[:, None, None], float("-inf"))
    assert allowed_positions(mask, 5).tolist() == allowed.tolist()


@pytest.mark.parametrize("method", ["tokenselect", "tidaldecode"])
def test_sparse_decoding_at_ratio_zero_equals_full_attention(method):
    model = tiny_llama(layers=4)
    context = compress_context(model, IDS, press_from("knorm", ratio=0.0))
    full = answer(model, context, QUESTION, max_new_tokens=8).ids
    same = answer(model, context, QUESTION, max_new_tokens=8, decode=press_from(method, ratio=0.0)).ids
    assert same.tolist() == full.tolist()


def test_sparse_decoding_attends_only_the_budget(monkeypatch):
    model = tiny_llama(layers=4)
    import tokensift.kv.decode as decode

    widths: list[int] = []
    original = decode.attend_positions

    def watched(query, keys, values, positions, scaling, allowed=None):
        widths.append((positions.shape[-1], keys.shape[2]))
        return original(query, keys, values, positions, scaling, allowed)

    monkeypatch.setattr(decode, "attend_positions", watched)
    ids = torch.randint(2, 64, (2, 40))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    with torch.no_grad(), sparse_decoding(model, "tokenselect", ratio=0.75):
        out = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 45)
    press = press_from("tokenselect", ratio=0.75)
    assert widths and all(k == press.budget_for(n) < n for k, n in widths)
    assert {n for _, n in widths} == {41, 42, 43, 44}  # four decoding steps after the prefill, every layer
    with (
        pytest.raises(MethodUnsupportedError, match="not a decoding policy"),
        sparse_decoding(model, "snapkv", ratio=0.5),
    ):
        pass


def test_tidaldecode_selects_at_two_layers_and_reuses_elsewhere():
    press = press_from("tidaldecode", ratio=0.5)
    assert press.selecting(list(range(30)), 30) == {2, 12}
    assert press.selecting([5, 11, 17], 18) == {5}


def test_a_prefill_leaves_no_chunk_allocated_behind_the_sliding_windows():
    from tokensift.kv.cache import tensor_bytes

    model = tiny_gemma3(window=8)
    done = compress_context(model, IDS, press_from("knorm", ratio=0.0), chunk_size=32)
    window = done.cache.layers[0]
    assert window.keys.shape[2] == 7  # the window's last 7 tokens
    assert window.keys.untyped_storage().nbytes() == window.keys.nbytes  # not a view of the last 26-token chunk
    assert tensor_bytes(window.keys) == 7 * 16 * 4
