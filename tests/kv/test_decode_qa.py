import pytest
import torch

from tokensift.kv import bounded, press_from
from tokensift.kv.decode import BoundedLayer, online_methods
from tokensift.kv.qa import answer, compress_context


@pytest.mark.parametrize("method", online_methods())
@pytest.mark.parametrize("sample", [False, True])
def test_decode_cache_never_exceeds_max_cache_tokens(llama, monkeypatch, method, sample):
    seen: list[int] = []
    original = BoundedLayer.update

    def watched(self, key_states, value_states, *args, **kwargs):
        out = original(self, key_states, value_states, *args, **kwargs)
        seen.append(int(self.lengths().max()))
        return out

    monkeypatch.setattr(BoundedLayer, "update", watched)
    torch.manual_seed(0)
    ids = torch.randint(2, 64, (2, 30))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding
    with torch.no_grad(), bounded(llama, method, max_cache_tokens=20, every=4):
        out = llama.generate(
            ids, attention_mask=mask, max_new_tokens=25, min_new_tokens=25, do_sample=sample, pad_token_id=0
        )
    assert out.shape == (2, 55)
    assert seen and max(seen) <= 20
    assert len(set(seen)) > 1  # it evicted repeatedly while decoding


def test_bounded_without_pressure_equals_full_cache(llama):
    ids = torch.randint(2, 64, (1, 12))
    kwargs = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        reference = llama.generate(ids, **kwargs)
        with bounded(llama, "h2o", max_cache_tokens=100, every=4):
            same = llama.generate(ids, **kwargs)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(reference.logits, same.logits, strict=True))


def test_qa_answers_several_questions_from_one_compressed_context(llama):
    torch.manual_seed(3)
    context, question = torch.randint(2, 64, (1, 40)), torch.randint(2, 64, (1, 5))
    full = compress_context(llama, context, press_from("knorm", ratio=0.0))
    plain = llama.generate(torch.cat([context, question], 1), max_new_tokens=5, min_new_tokens=5, do_sample=False)
    first = answer(llama, full, question, max_new_tokens=5)
    assert torch.equal(first.ids[0], plain[0, 45:])

    small = compress_context(llama, context, press_from("snapkv", ratio=0.5, window=4, kernel=3))
    lengths = small.cache.layers[0].lengths().clone()
    one = answer(llama, small, question, max_new_tokens=5)
    other = answer(llama, small, torch.randint(2, 64, (1, 3)), max_new_tokens=5)
    again = answer(llama, small, question, max_new_tokens=5)
    assert torch.equal(one.ids, again.ids)  # the context's cache was restored between questions
    assert torch.equal(small.cache.layers[0].lengths(), lengths) and other.ids.shape[1] >= 1
    assert small.stats.kept_fraction == pytest.approx(0.5, abs=0.02)


def test_lazyeviction_remembers_recurrence_intervals_and_spares_the_newest_window():
    press = press_from("lazyeviction", window=2, threshold=1.0)
    positions = torch.arange(6)[None]
    state = press.fresh_state(positions)
    assert state[0, :, 0].tolist() == [0, 1, 2, 3, 4, 5]  # not yet recalled: its own step
    uniform = torch.full((1, 6), 1 / 6)
    focus = torch.tensor([[0.9, 0.02, 0.02, 0.02, 0.02, 0.02]])
    steps = {10: focus, 13: uniform * 0.5, 17: focus}  # token 0 recalled at 10 and 17 (a gap of 7)
    for now in range(6, 20):
        attention = steps.get(now, uniform * 0.5)
        state, scores = press.update_state(state, attention, torch.tensor([[0, 1, 2, 3, 4, now]]))
    assert state[0, 0].tolist() == [17.0, 7.0, 2.0]  # last recall, longest gap between recalls, recalls
    assert state[0, 1].tolist() == [1.0, 0.0, 0.0]  # never recalled
    assert scores[0, 0] == 7 - (19 - 17)  # still inside its usual gap
    assert scores[0, 1] == -(19 - 1) and scores[0, 5] == float("inf")  # ages out / the newest window kept
    assert press.choose(scores, 2)[0].tolist() == [0, 5]
