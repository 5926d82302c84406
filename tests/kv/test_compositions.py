"""Composition by object: every wrapper over every KV scorer builds, runs and keeps exactly its budget."""

import pytest
import torch
from transformers import DynamicCache

from tests.conftest import kv_options, tiny_llama
from tokensift.kv import compress
from tokensift.kv.methods.adakv import AdaKV
from tokensift.kv.methods.chunkkv import ChunkKV
from tokensift.kv.methods.keydiff import KeyDiff
from tokensift.kv.methods.kvzip import KVzip
from tokensift.kv.methods.pyramidkv import PyramidKV
from tokensift.kv.methods.snapkv import SnapKV
from tokensift.methods import build, compositions
from tokensift.scores import key_diff_score
from tokensift.select import chunk_indices, head_adaptive_indices, pyramid_budgets


def _options(spec: str, tokenizer) -> dict:
    return kv_options(spec, tokenizer, layers=3)


@pytest.fixture(scope="module")
def llama():
    return tiny_llama(layers=3, context=256)  # room for kvzip's repeat pass


@pytest.mark.parametrize("spec", compositions("kv"))
def test_every_wrapper_over_every_scorer_generates_with_its_budget(llama, word_tokenizer, spec):
    ids = torch.randint(2, 64, (1, 48), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), compress(llama, spec, ratio=0.75, **_options(spec, word_tokenizer)) as session:
        out = llama.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, 51)
    kept = sum(n for record in session.stats.layers for row in record.kept for n in row)
    assert kept == 3 * 2 * 12  # layers x KV heads x 25 % of 48 (at full precision), however the wrapper shares it
    if build("kv", spec, ratio=0.75, **_options(spec, word_tokenizer)).evicts:
        assert session.stats.kept_fraction == pytest.approx(0.25, abs=0.01)
    elif spec.startswith("qprune:"):  # the kept 25 % all packed at 4 bits, the rest gone
        assert 0 < session.stats.kept_fraction < 0.25
    else:  # packed or merged: the kept tokens and what stands for the rest, less than the whole cache
        assert 0.25 <= session.stats.kept_fraction < 1.0


def _cache(llama, press, ids):
    cache = DynamicCache(config=llama.config)
    with torch.no_grad(), press(llama):
        llama(ids, past_key_values=cache)
    return cache


def test_a_composition_by_name_equals_the_same_composition_by_object(llama, word_tokenizer):
    ids = torch.randint(2, 64, (1, 40), generator=torch.Generator().manual_seed(4))
    for by_name, by_object in [
        (build("kv", "adakv:keydiff", ratio=0.5), AdaKV(press=KeyDiff(ratio=0.5))),
        (
            build("kv", "pyramidkv:adakv:kvzip", keep=0.5, tokenizer=word_tokenizer),
            PyramidKV(press=AdaKV(press=KVzip(keep=0.5, tokenizer=word_tokenizer))),
        ),
    ]:
        assert by_name == by_object
        a, b = _cache(llama, by_name, ids), _cache(llama, by_object, ids)
        for la, lb in zip(a.layers, b.layers, strict=True):
            assert torch.equal(la.lengths(), lb.lengths())
            assert all(torch.equal(la.segment(0, h)[0], lb.segment(0, h)[0]) for h in range(2))


def test_wrappers_keep_exactly_what_their_selector_chooses_from_the_wrapped_scores(llama):
    ids = torch.randint(2, 64, (1, 40), generator=torch.Generator().manual_seed(5))
    full = DynamicCache(config=llama.config)
    with torch.no_grad():
        llama(ids, past_key_values=full)
    for press, choose in [
        (
            AdaKV(press=KeyDiff(ratio=0.5), safeguard=0.3),
            lambda s, k, layer: head_adaptive_indices(s, k, safeguard=0.3),
        ),
        (ChunkKV(press=KeyDiff(ratio=0.5), chunk=5, reuse=1), lambda s, k, layer: [chunk_indices(s.sum(0), k, 5)] * 2),
        (
            PyramidKV(press=KeyDiff(ratio=0.5), beta=4.0),
            lambda s, k, layer: list(torch.topk(s, pyramid_budgets(3, k, 40, beta=4.0)[layer]).indices.sort().values),
        ),
    ]:
        cache = _cache(llama, press, ids)
        for layer, (full_layer, ragged) in enumerate(zip(full.layers, cache.layers, strict=True)):
            keys = full_layer.keys[0]
            expected = choose(key_diff_score(keys[None])[0], 20, layer)
            for h in range(2):
                assert torch.equal(ragged.segment(0, h)[0], keys[h, expected[h]]), (type(press).__name__, layer, h)


def test_snapkv_wrapped_by_chunkkv_reuses_indices_across_layer_pairs(llama):
    ids = torch.randint(2, 64, (1, 40), generator=torch.Generator().manual_seed(6))
    cache = _cache(llama, ChunkKV(press=SnapKV(ratio=0.5, window=4, kernel=3), reuse=2), ids)
    full = DynamicCache(config=llama.config)
    with torch.no_grad():
        llama(ids, past_key_values=full)
    positions = []
    for full_layer, ragged in zip(full.layers, cache.layers, strict=True):
        keys = full_layer.keys[0, 0]
        stored = ragged.segment(0, 0)[0]
        positions.append([int((keys == row).all(-1).nonzero()[0]) for row in stored])
    assert positions[0] == positions[1] != positions[2]  # layer 1 reuses layer 0; layer 2 chooses again
