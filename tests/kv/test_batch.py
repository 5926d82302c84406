"""Continuous batching: sequences decoded together give the logits each gives alone, joining and leaving."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_gemma3, tiny_llama
from tokensift.errors import InputError, ModelError
from tokensift.kv.api import press_from
from tokensift.kv.attach import attached
from tokensift.kv.batch import Batch, BatchLayer
from tokensift.kv.qa import compress_context, continue_from, copy_cache


def _alone(model, context, tail: list[int], steps: list[int]) -> list[torch.Tensor]:
    """Logits after the tail, then after each of ``steps`` fed one at a time, for one sequence alone."""
    cache = copy_cache(context.cache)
    out = [continue_from(model, context, torch.tensor([tail]), cache)[0, -1]]
    position = context.length + len(tail)
    with attached(model, None), torch.no_grad():
        for i, token in enumerate(steps):
            logits = model(torch.tensor([[token]]), past_key_values=cache, position_ids=torch.tensor([[position + i]]))
            out.append(logits.logits[0, -1])
    return out


def _joined(model, context, tail: list[int]):
    cache = copy_cache(context.cache)
    continue_from(model, context, torch.tensor([tail]), cache)
    return cache, context.length + len(tail)


@pytest.mark.parametrize("method", ["snapkv", "adakv:keydiff", None])
def test_batched_rows_equal_each_row_alone(method: str | None) -> None:
    model = tiny_llama(layers=3)
    torch.manual_seed(1)
    contexts = []
    for n in (37, 52, 23):
        ids = torch.randint(2, 64, (1, n))
        press = press_from(method or "snapkv", ratio=0.5 if method else 0.0)
        contexts.append(compress_context(model, ids, press))
    tails = [[5, 6, 7], [9], [11, 12]]
    steps = [[3, 4, 5, 6], [7, 8, 9, 10], [12, 13, 14, 15]]
    expected = [_alone(model, c, t, s) for c, t, s in zip(contexts, tails, steps, strict=True)]
    batch = Batch(model)
    with attached(model, None):
        # row 0 alone for one step, then rows 1 and 2 join, then row 1 leaves
        batch.join(*_joined(model, contexts[0], tails[0]))
        got = {0: [batch.step(torch.tensor([steps[0][0]]))[0]]}
        batch.join(*_joined(model, contexts[1], tails[1]))
        batch.join(*_joined(model, contexts[2], tails[2]))
        logits = batch.step(torch.tensor([steps[0][1], steps[1][0], steps[2][0]]))
        got[0].append(logits[0])
        got[1] = [logits[1]]
        got[2] = [logits[2]]
        logits = batch.step(torch.tensor([steps[0][2], steps[1][1], steps[2][1]]))
        for row in range(3):
            got[row].append(logits[row])
        assert batch.leave([1]) == [0, 2]  # the last row moved into the gap
        logits = batch.step(torch.tensor([steps[0][3], steps[2][2]]))
        got[0].append(logits[0])
        got[2].append(logits[1])
    assert batch.rows == 2
    for row, offset in ((0, 1), (1, 1), (2, 1)):
        for i, tensor in enumerate(got[row]):
            torch.testing.assert_close(tensor, expected[row][offset + i], atol=1e-5, rtol=1e-5)


def test_ragged_heads_keep_their_own_lengths() -> None:
    model = tiny_llama()
    context = compress_context(model, torch.randint(2, 64, (1, 40)), press_from("adakv:snapkv", ratio=0.5))
    batch = Batch(model)
    cache, length = _joined(model, context, [4])
    with attached(model, None):
        batch.join(cache, length)
        batch.step(torch.tensor([5]))
    for mine, theirs in zip(batch.cache.layers, cache.layers, strict=True):
        assert mine.lengths()[0].tolist() == [n + 1 for n in theirs.lengths()[0].tolist()]
        assert mine.next_position.tolist() == [length + 1]


def test_sliding_window_layers_mask_old_positions() -> None:
    model = tiny_gemma3(window=8)
    ids = torch.randint(2, 64, (1, 20))
    context = compress_context(model, ids, press_from("snapkv", ratio=0.0))
    expected = _alone(model, context, [3], [4, 5, 6])
    batch = Batch(model)
    got = []
    with attached(model, None):
        batch.join(*_joined(model, context, [3]))
        for token in (4, 5, 6):
            got.append(batch.step(torch.tensor([token]))[0])
    assert batch.cache.layers[0].window == 8 and batch.cache.layers[1].window is None
    for a, b in zip(got, expected[1:], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rows_leave_and_join_without_copying_the_others() -> None:
    layer = BatchLayer(1, 2, 2, torch.float32, torch.device("cpu"))
    for i in range(4):
        layer.add_row([torch.full((i + 1, 2), float(i))], [torch.full((i + 1, 2), float(i))], i + 1)
    storage = layer._keys.data_ptr()
    assert layer.remove_rows([0, 2]) == [3, 1]
    assert layer._keys.data_ptr() == storage  # no copy of the batch
    assert layer.ends[:, 0].tolist() == [4, 2] and layer.next_position.tolist() == [4, 2]
    assert layer.keys[0, 0, :4, 0].tolist() == [3.0] * 4 and layer.valid[1, 0].tolist()[:3] == [True, True, False]
    layer.add_row([torch.full((1, 2), 9.0)], [torch.full((1, 2), 9.0)], 1)
    assert layer._keys.data_ptr() == storage and layer.rows == 3
    assert layer.remove_rows([0, 1, 2]) == [] and layer.nbytes() == 0


def test_misuse_is_a_typed_error() -> None:
    layer = BatchLayer(2, 4, 4, torch.float32, torch.device("cpu"))
    layer.add_row([torch.zeros(3, 4)] * 2, [torch.zeros(3, 4)] * 2, 3)
    with pytest.raises(ModelError):
        layer.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    with attached(tiny_llama(), None), pytest.raises(InputError):
        layer.update(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))
    with pytest.raises(InputError):
        layer.add_row([torch.zeros(3, 4)], [torch.zeros(3, 4)], 3)


def test_leading_ids_are_the_tokenizers_own_bos_unless_the_text_has_it() -> None:
    from tokenizers.processors import TemplateProcessing

    from tests.conftest import word_level_tokenizer
    from tokensift.kv.tasks import Sample, leading_ids, split_prompt

    plain = word_level_tokenizer()
    assert leading_ids(plain, "the cat") == []
    marked = word_level_tokenizer()
    marked.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    assert leading_ids(marked, "the cat") == [1]
    assert leading_ids(marked, "<s> the cat") == []
    head, tail = split_prompt(marked, Sample("qa", "x", "the cat sat", question="the dog ?"), query_aware=False)
    assert head == [1, *marked("the cat sat", add_special_tokens=False).input_ids]
    assert tail == marked("\n\nthe dog ?\n", add_special_tokens=False).input_ids
