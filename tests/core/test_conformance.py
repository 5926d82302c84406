"""One contract for every registered method of every target, on tiny random-weight models.

1. ratio 0 gives output bit-identical to the unmodified model;
2. the kept count equals the budget (``keep_tokens``);
3. bad options raise a typed error naming the option.

A target whose methods have no harness here fails the test: a new target adds its harness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from tests.conftest import kv_options, tiny_llama, word_level_tokenizer
from tests.text.helpers import scorer, sentence_text
from tokensift.errors import ParameterError
from tokensift.kv.sparse import DecodeState
from tokensift.methods import accepts, build, get_method, list_methods


@dataclass
class Harness:
    """How one target runs a method: unmodified, at ratio 0, and at an absolute budget."""

    exact: Callable[[Any, str], tuple[Any, Any]]
    """(output of the unmodified model, output with the method at ratio 0)."""
    kept: Callable[[Any, str, int], tuple[int, int]]
    """(tokens kept, tokens the budget of ``k`` asks for)."""


_kv_options = kv_options


def kv_exact(ctx: Any, name: str) -> tuple[Any, Any]:
    from tokensift.kv import compress, compress_context, press_from, sparse_decoding

    model, tokenizer = ctx["llama"], ctx["tokenizer"]
    ids = torch.randint(2, 64, (1, 40), generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    stage = get_method(name, "kv").cls.stage
    with torch.no_grad():
        plain = torch.stack(model.generate(ids, **kwargs).logits)
        if stage == "prefill":  # the filter keeps every token: its prefill is the plain one
            full = compress_context(model, ids, press_from("knorm", ratio=0.0)).last_logits
            return full, compress_context(model, ids, press_from(name, ratio=0.0)).last_logits
        around = sparse_decoding if stage == "decode" else compress
        with around(model, name, ratio=0.0, **_kv_options(name, tokenizer)):
            same = torch.stack(model.generate(ids, **kwargs).logits)
    return plain, same


def kv_kept(ctx: Any, name: str, k: int) -> tuple[int, int]:
    from transformers import DynamicCache

    from tokensift.kv import compress, compress_context, press_from

    model, tokenizer = ctx["llama"], ctx["tokenizer"]
    ids = torch.randint(2, 64, (1, 40), generator=torch.Generator().manual_seed(1))
    layers, heads = model.config.num_hidden_layers, model.config.num_key_value_heads
    stage = get_method(name, "kv").cls.stage
    if stage == "prefill":  # every layer's cache holds the kept tokens
        done = compress_context(model, ids, press_from(name, keep_tokens=k))
        return sum(layer.keys.shape[1] * layer.keys.shape[2] for layer in done.cache.layers), layers * heads * k
    if stage == "decode":  # positions one decoding step attends in one layer
        press = (
            press_from(name, keep_tokens=k, dense_layers=0)
            if name == "tidaldecode"
            else press_from(name, keep_tokens=k)
        )
        query, keys = torch.randn(1, 4, 1, 8), torch.randn(1, heads, 40, 8)
        state = DecodeState([0, 1])
        picks = [press.positions(state, layer, query, keys, 0.35, None) for layer in (0, 1)]
        picked = picks[-1]  # (a selection layer attends fully and leaves its pick to the next layer)
        return int(picked.shape[1] * picked.shape[2]), heads * k
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), compress(model, name, keep_tokens=k, **_kv_options(name, tokenizer)) as session:
        model(ids, past_key_values=cache)
    kept = sum(n for record in session.stats.layers for row in record.kept for n in row)
    return kept, layers * heads * k  # per-head budgets may differ (AdaKV, PyramidKV, KVzip); their total may not


def text_exact(ctx: Any, name: str) -> tuple[Any, Any]:
    from tokensift.text import compress

    text = sentence_text(80, 3)
    return text, compress(text, ratio=0.0, method=name, model=ctx["scorer"]).compressed


def text_kept(ctx: Any, name: str, k: int) -> tuple[int, int]:
    from tokensift.text import compress

    result = compress(sentence_text(80, 4), keep_tokens=k, method=name, model=ctx["scorer"], question="the cat")
    return result.tokens_after, k  # one token per word with the word-level tokenizer: exact is reachable


def encoder_exact(ctx: Any, name: str) -> tuple[Any, Any]:
    from tokensift.encoder import reduce

    bert, batch = ctx["bert"], ctx["batch"]
    with torch.no_grad():
        plain = bert(**batch).last_hidden_state
        with reduce(bert, name, ratio=0.0):
            same = bert(**batch).last_hidden_state
    return plain, same


def encoder_kept(ctx: Any, name: str, k: int) -> tuple[int, int]:
    from tokensift.encoder import reduce

    bert, batch = ctx["bert"], ctx["batch"]
    with torch.no_grad(), reduce(bert, name, keep_tokens=k) as patch:
        bert(**batch)
    assert patch.last is not None
    return int(patch.last.valid.sum()), k * batch["input_ids"].shape[0]


def _training_batch() -> tuple[Any, Any, Any]:
    from tokensift.training.stats import IGNORE

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 16, 64, generator=generator)
    labels = torch.randint(2, 64, (2, 16), generator=generator)
    labels[:, :3] = IGNORE
    reference = torch.rand(2, 15, generator=generator)
    return logits, labels, reference


def training_exact(ctx: Any, name: str) -> tuple[Any, Any]:
    """A loss policy at ratio 0 is the full loss; a data scorer counting every token is plain IFD."""
    from tokensift.training.loss import SelectiveLoss, full_loss

    if not accepts("training", name, "ratio"):
        conditional, alone = torch.rand(12, generator=torch.Generator().manual_seed(4)), torch.rand(12)
        everything = {"token_keep": 1.0} if accepts("training", name, "token_keep") else {}
        plain = build("training", "ifd").score(conditional, alone).value
        return torch.tensor(plain), torch.tensor(build("training", name, **everything).score(conditional, alone).value)
    logits, labels, reference = _training_batch()
    loss = SelectiveLoss(build("training", name, ratio=0.0), reference=lambda labels, **batch: reference)
    return full_loss(logits, labels), loss(logits, labels, input_ids=labels)


def training_kept(ctx: Any, name: str, k: int) -> tuple[int, int]:
    """Tokens whose loss is kept (or, for a data scorer, response tokens it counts) against the budget."""
    from tokensift.training.stats import token_stats

    if not accepts("training", name, "ratio"):
        n = 24
        conditional, alone = torch.rand(n, generator=torch.Generator().manual_seed(5)), torch.rand(n)
        if accepts("training", name, "token_keep"):
            return len(build("training", name, token_keep=k / n).score(conditional, alone).tokens), k
        return len(build("training", name).score(conditional, alone).tokens), n
    logits, labels, reference = _training_batch()
    stats = token_stats(logits, labels, reference)
    chosen = build("training", name, keep_tokens=k)
    expected = int(stats.valid.sum()) if name == "none" else k  # the full loss keeps every token by definition
    return int(chosen.select(stats).sum()), expected


def _vision_run(ctx: Any, name: str | None, **budget: Any) -> Any:
    from tokensift.vision import fastv_prefill, prepare

    llava, processor, images = ctx["llava"], ctx["processor"], ctx["images"]
    questions = ["the red cat ?", "a dog sat on the mat ?"]
    chosen = None if name is None else build("vision", name)
    if chosen is not None and chosen.stage == "llm":
        return fastv_prefill(llava, prepare(llava, processor, images, questions), chosen, **budget)
    return fastv_prefill(llava, prepare(llava, processor, images, questions, chosen, **budget), None)


def vision_exact(ctx: Any, name: str) -> tuple[Any, Any]:
    """Keeping every visual token is the uncompressed VLM (first-token logits)."""
    return _vision_run(ctx, None).logits, _vision_run(ctx, name, keep=1.0).logits


def vision_kept(ctx: Any, name: str, k: int) -> tuple[int, int]:
    return sum(_vision_run(ctx, name, keep_tokens=k).kept), 2 * k


HARNESSES = {
    "kv": Harness(kv_exact, kv_kept),
    "vision": Harness(vision_exact, vision_kept),
    "text": Harness(text_exact, text_kept),
    "encoder": Harness(encoder_exact, encoder_kept),
    "training": Harness(training_exact, training_kept),
}


@pytest.fixture(scope="module")
def ctx() -> dict[str, Any]:
    from transformers import BertConfig, BertModel

    tokenizer = word_level_tokenizer()
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).eval()
    ids = torch.randint(5, 100, (2, 20), generator=torch.Generator().manual_seed(2))
    from types import SimpleNamespace

    from tests.vision.test_pipeline import images, tiny_llava
    from tokensift.models.vision import image_processor

    return {
        "llava": tiny_llava(),
        "processor": SimpleNamespace(tokenizer=tokenizer, image_processor=image_processor(28)),
        "images": images(2),
        "llama": tiny_llama(context=256),
        "tokenizer": tokenizer,
        "scorer": scorer(tokenizer),
        "bert": bert,
        "batch": {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
    }


METHODS = [(m.target, m.name) for m in list_methods()]


def test_every_target_with_methods_has_a_harness():
    assert {target for target, _ in METHODS} <= set(HARNESSES)


@pytest.mark.parametrize("target,name", METHODS)
def test_ratio_zero_is_bit_identical_to_the_unmodified_model(ctx, target, name):
    plain, same = HARNESSES[target].exact(ctx, name)
    assert plain == same if isinstance(plain, str) else torch.equal(plain, same)


@pytest.mark.parametrize("target,name", METHODS)
@pytest.mark.parametrize("k", [6, 11])
def test_the_kept_count_equals_the_budget(ctx, target, name, k):
    kept, budget = HARNESSES[target].kept(ctx, name, k)
    assert kept == budget


@pytest.mark.parametrize("target,name", METHODS)
def test_bad_options_raise_typed_errors_naming_the_option(target, name):
    with pytest.raises(ParameterError) as unknown:
        build(target, name, no_such_option=1)
    assert unknown.value.option == "no_such_option"
    for option, value in _wrong_values(target, name):
        with pytest.raises(ParameterError) as wrong:
            build(target, name, **{option: value})
        assert wrong.value.option == option


def _wrong_values(target: str, name: str) -> list[tuple[str, Any]]:
    """A value of the wrong type for every option of the method (and an out-of-range budget where it has one)."""
    from tokensift.methods import get_method, parse

    cases: list[tuple[str, Any]] = []
    for part in parse(target, name):
        for option, default in get_method(part.name, target).options().items():
            if isinstance(default, bool):
                cases.append((option, "yes"))
            elif isinstance(default, int | float):
                cases.append((option, "many"))
            elif isinstance(default, str):
                cases.append((option, 3))
    if accepts(target, name, "ratio"):
        cases.append(("ratio", 1.5))
    return cases
