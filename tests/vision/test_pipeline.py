"""Visual-token selection on a tiny random LLaVA (DINOv2 tower + Llama): layouts, budgets, FastV, generate()."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Dinov2Config, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from tests.conftest import tiny_llama, word_level_tokenizer
from tokensift.errors import InputError, ModelError, ParameterError
from tokensift.methods import list_methods
from tokensift.models.vision import image_processor
from tokensift.vision import answer, prepare
from tokensift.vision.fastv import fastv_prefill, greedy
from tokensift.vision.prompt import PREFIX, SUFFIX

BEFORE = [m.name for m in list_methods("vision") if m.cls.stage in ("before", "tower")]
N = 16  # 28 px / patch 7 -> 4 x 4 patches


def tiny_llava(seed: int = 0) -> LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    vision = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=28, patch_size=7
    )
    text = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=63,
        image_seq_length=N,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    return LlavaForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def llava() -> LlavaForConditionalGeneration:
    return tiny_llava()


@pytest.fixture(scope="module")
def processor() -> SimpleNamespace:
    return SimpleNamespace(tokenizer=word_level_tokenizer(), image_processor=image_processor(28))


def images(count: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)) for _ in range(count)]


QUESTIONS = ["the red cat ?", "a big dog sat on the mat ?"]


def test_uncompressed_layout_equals_llava_own_forward(llava, processor):
    tok = processor.tokenizer
    prepared = prepare(llava, processor, images(1), QUESTIONS[:1])
    ids = tok(PREFIX, add_special_tokens=False).input_ids + [63] * N
    ids += tok(SUFFIX.format(question=QUESTIONS[0]), add_special_tokens=False).input_ids
    pixels = processor.image_processor(images(1), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        reference = llava(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[:, -1]
    torch.testing.assert_close(fastv_prefill(llava, prepared, None).logits, reference, atol=1e-5, rtol=1e-5)
    assert prepared.kept == [N] and prepared.visual_tokens == N and bool((prepared.status == 0).all())


@pytest.mark.parametrize("method", BEFORE)
def test_generate_runs_on_the_pruned_inputs_and_matches_greedy(llava, processor, method):
    prepared = prepare(llava, processor, images(), QUESTIONS, method, keep=0.25)
    assert prepared.kept == [4, 4]
    with torch.no_grad():
        generated = llava.generate(
            inputs_embeds=prepared.inputs_embeds,
            attention_mask=prepared.attention_mask,
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
        )
    ours = greedy(llava, fastv_prefill(llava, prepared, None), 4, eos=[])
    assert generated.tolist() == ours.tolist()


@pytest.mark.parametrize("method", BEFORE)
def test_per_row_budgets_and_rows_independent_of_the_batch(llava, processor, method):
    both = prepare(llava, processor, images(), QUESTIONS, method, keep_per_row=[3, 9])
    alone = prepare(llava, processor, images()[1:], QUESTIONS[1:], method, keep_per_row=[9])
    assert both.kept == [3, 9]
    assert [int((s == 0).sum()) for s in both.status] == [3, 9]
    width = int(alone.attention_mask.sum())
    torch.testing.assert_close(both.inputs_embeds[1, -width:], alone.inputs_embeds[0], atol=1e-5, rtol=1e-5)
    logits_both = fastv_prefill(llava, both, None).logits
    torch.testing.assert_close(logits_both[1:], fastv_prefill(llava, alone, None).logits, atol=1e-4, rtol=1e-4)
    merged = (both.status == 1).any()
    assert bool(merged) == (method in ("visionzip", "tower"))  # VisionZip and MCTF in the tower merge; the others drop


def eager_attentions(module, **inputs) -> tuple[torch.Tensor, ...]:
    """Every layer's attention weights from an eager forward of ``module`` (then back to sdpa)."""
    module.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            return module(**inputs, output_attentions=True).attentions
    finally:
        module.config._attn_implementation = "sdpa"


def cls_attention(llava, processor, image) -> torch.Tensor:
    pixels = processor.image_processor([image], return_tensors="pt")["pixel_values"]
    attentions = eager_attentions(llava.model.vision_tower, pixel_values=pixels)
    return attentions[-1][0, :, 0, 1:].mean(0)


def test_fastervlm_keeps_the_patches_cls_attends_to_most(llava, processor):
    image = images(1)[0]
    prepared = prepare(llava, processor, [image], QUESTIONS[:1], "fastervlm", keep_tokens=5)
    kept = set(torch.nonzero(prepared.status[0] == 0).flatten().tolist())
    assert kept == set(cls_attention(llava, processor, image).topk(5).indices.tolist())


def test_visionzip_merges_the_rest_into_contextual_tokens(llava, processor):
    prepared = prepare(llava, processor, images(1), QUESTIONS[:1], "visionzip", keep_tokens=8)
    status = prepared.status[0]
    assert int((status == 0).sum()) == 8 and int((status == 2).sum()) == 0 and int((status == 1).sum()) == N - 8


def test_mmtok_depends_on_the_question(llava, processor):
    image = images(1)[0]
    kept = [
        torch.nonzero(prepare(llava, processor, [image], [q], "mmtok", keep_tokens=3, alpha=0.0).status[0] == 0)
        .flatten()
        .tolist()
        for q in ("red red red", "dog dog dog")
    ]
    assert kept[0] != kept[1]


def test_hiprune_keeps_anchor_neighbours(llava, processor):
    prepared = prepare(llava, processor, images(1), QUESTIONS[:1], "hiprune", keep_tokens=8, alpha=0.625)  # 1 anchor
    grid = (prepared.status[0] == 0).view(4, 4)
    assert int(grid.sum()) == 8
    # the single anchor brings its grid neighbours: some kept patch has a kept 4-neighbour
    pairs = (grid[1:] & grid[:-1]).sum() + (grid[:, 1:] & grid[:, :-1]).sum()
    assert int(pairs) >= 1


def test_fastv_cuts_image_tokens_after_layer_k(llava, processor):
    prepared = prepare(llava, processor, images(), QUESTIONS, None)
    full = fastv_prefill(llava, prepared, None)
    everything = fastv_prefill(llava, prepared, _fastv(layer=1), keep=1.0)
    torch.testing.assert_close(everything.logits, full.logits, atol=1e-5, rtol=1e-5)
    half = fastv_prefill(llava, prepared, _fastv(layer=1), keep=0.5)
    length = prepared.attention_mask.shape[1] - N // 2
    assert half.kept == [N // 2, N // 2]
    assert all(layer.keys.shape[2] == length for layer in half.cache.layers)
    assert not torch.allclose(half.logits, full.logits)
    out = answer(llava, processor, images(), QUESTIONS, "fastv", keep=0.5, layer=1, max_new_tokens=3)
    assert out.prepared.kept == [N // 2, N // 2] and len(out.answers) == 2
    assert [int((s == 0).sum()) for s in out.prepared.status] == [N // 2, N // 2]


def fastv_reference(llava, prepared, row: int, layer: int, k: int) -> set[int]:
    """FastV's reference selection (the authors' code: ``last_layer_attention_avg_last_tok``), written out: the
    K-th layer's attention weights from an eager forward of one row alone, mean over heads, the last token's row,
    top-k over the image positions."""
    width = int(prepared.attention_mask[row].sum())
    embeds = prepared.inputs_embeds[row : row + 1, -width:]
    image = prepared.image_mask[row, -width:]
    attentions = eager_attentions(llava.model.language_model, inputs_embeds=embeds)
    last_row = attentions[layer - 1].mean(dim=1)[0, -1]
    return set(last_row[image].topk(k).indices.tolist())


@pytest.mark.parametrize("layer", [2, 3])  # layer 0 of this random model attends ~uniformly: ties
def test_fastv_selects_as_the_reference_code_does(llava, processor, layer):
    prepared = prepare(llava, processor, images(), QUESTIONS, None)  # two rows, left-padded differently
    out = fastv_prefill(llava, prepared, _fastv(layer=layer), keep_tokens=5)
    assert out.image_kept is not None
    for row in range(2):
        chosen = set(torch.nonzero(out.image_kept[row]).flatten().tolist())
        assert chosen == fastv_reference(llava, prepared, row, layer, 5)
    # the paper's reading (every query's mean attention) is another selection on the same inputs
    every = fastv_prefill(llava, prepared, _fastv(layer=layer, query="all"), keep_tokens=5)
    assert every.image_kept is not None and not torch.equal(every.image_kept, out.image_kept)


def _fastv(**options):
    from tokensift.methods import resolve

    return resolve("vision", "fastv", **options)


def test_errors(llava, processor):
    with pytest.raises(InputError, match="one question per image"):
        prepare(llava, processor, images(2), QUESTIONS[:1])
    with pytest.raises(ParameterError, match="keep must be in"):
        prepare(llava, processor, images(1), QUESTIONS[:1], "random", keep=1.5)
    with pytest.raises(ModelError, match="not a LLaVA-family VLM"):
        prepare(tiny_llama(), processor, images(1), QUESTIONS[:1], "random", keep=0.5)
    for layer in (0, 4):  # K must leave at least one later layer (the tiny Llama has 4)
        with pytest.raises(ParameterError, match="fastv"):
            fastv_prefill(llava, prepare(llava, processor, images(1), QUESTIONS[:1]), _fastv(layer=layer), keep=0.5)


def visionzip_reference(cls: torch.Tensor, keys: torch.Tensor, dominant: int, contextual: int) -> dict[int, int]:
    """VisionZip's reference selection (the authors' ``clip_encoder.py``), written out for one image: the
    ``dominant`` patches [CLS] attends to most stay; of the rest, in position order, every ``step``-th becomes a
    contextual target and every other one goes to the target whose normalised key is most similar. Returns each
    patch's target (itself for kept patches)."""
    n = cls.shape[0]
    top = set(cls.topk(dominant).indices.tolist())
    rest = [i for i in range(n) if i not in top]
    unit = keys / keys.norm(dim=-1, keepdim=True)
    step = max(1, len(rest) // contextual)
    hubs = rest[::step][:contextual]
    target = {i: i for i in top | set(hubs)}
    for i in rest:
        if i not in hubs:
            target[i] = hubs[int((unit[hubs] @ unit[i]).argmax())]
    return target


@pytest.mark.parametrize("keep", [64, 16, 7])
def test_visionzip_selects_and_assigns_as_the_reference_code_does(keep):
    """Same kept patches and merge targets as the reference on the same attention and keys. The merged value
    differs on purpose: the reference adds the mean of the assigned patches to the target (a contextual token of
    twice a patch's scale), ours averages the target with them, so a merged token stays on the scale of the
    patches the projector was trained on."""
    from tokensift.methods import resolve
    from tokensift.vision.methods.base import VisionContext

    gen = torch.Generator().manual_seed(keep)
    n = 64
    features = torch.randn(1, n, 12, generator=gen)
    cls = torch.softmax(torch.randn(1, n, generator=gen), dim=-1)
    keys = torch.randn(1, n, 8, generator=gen)
    ctx = VisionContext(
        features=features,
        projected=features,
        keep=torch.tensor([keep]),
        grid=(8, 8),
        cls_attention={-1: cls},
        keys={-1: keys},
    )
    plan = resolve("vision", "visionzip").plan(ctx)
    contextual = keep - round(keep * 54 / 64)  # the paper's 54 dominant + 10 contextual of 64
    expected = visionzip_reference(cls[0], keys[0], keep - contextual, contextual)
    assert {i: int(t) for i, t in enumerate(plan.target[0])} == expected


def hiprune_reference(shallow: torch.Tensor, deep: torch.Tensor, keep: int, alpha: float, cols: int) -> set[int]:
    """HiPrune's reference selection (the authors' ``llava_arch.py``), written out for one image: round(keep *
    alpha / 5) anchors by object-layer attention received, with the flat neighbours -1, +1, -cols, +cols
    (clamped), then the rest of the budget by feature-layer attention received among the others."""
    n = shallow.numel()
    anchors = shallow.topk(round(keep * alpha / 5)).indices
    near = torch.cat([anchors, anchors - 1, anchors + 1, anchors - cols, anchors + cols]).clamp(0, n - 1).unique()
    deep = deep.clone()
    deep[near] -= 1
    rest = deep.topk(keep - near.numel()).indices
    return set(near.tolist()) | set(rest.tolist())


@pytest.mark.parametrize("keep", [40, 16])
def test_hiprune_selects_as_the_reference_code_does(keep):
    """Same patches as the reference on the same attention, anchors away from the grid's left and right edges
    (where the reference's flat neighbours wrap to the next row and ours do not)."""
    from tokensift.methods import resolve
    from tokensift.vision.methods.base import VisionContext

    gen = torch.Generator().manual_seed(keep)
    n, side = 64, 8
    shallow = torch.rand(1, n, generator=gen) * 0.01
    shallow[0, [18, 21, 42, 45]] += torch.tensor([0.5, 0.4, 0.3, 0.2])  # interior patches
    deep = torch.rand(1, n, generator=gen) * 0.02
    method = resolve("vision", "hiprune", alpha=0.5)
    middle = method._middle(12)
    assert middle == 4  # the 9th of 24 layers, scaled to DINOv2-small's 12
    ctx = VisionContext(
        features=torch.randn(1, n, 4, generator=gen),
        projected=torch.randn(1, n, 4, generator=gen),
        keep=torch.tensor([keep]),
        grid=(side, side),
        received={middle: shallow, 11: deep},
        n_layers=12,
        feature_layer=11,
    )
    kept = set(torch.nonzero(method.plan(ctx).target[0] >= 0).flatten().tolist())
    assert kept == hiprune_reference(shallow[0], deep[0], keep, 0.5, side)


def test_tower_merges_inside_the_vision_tower_to_the_exact_budget(llava, processor):
    from tokensift.encoder.patch import reduce

    prepared = prepare(llava, processor, images(), QUESTIONS, "tower", keep=0.5)
    assert prepared.kept == [8, 8] and prepared.visual_tokens == N
    pixels = processor.image_processor(images(), return_tensors="pt")["pixel_values"]
    tower = llava.model.vision_tower
    with torch.no_grad(), reduce(tower, "mctf", keep_tokens=9, layers=[0]) as patch:  # 8 patches + [CLS]
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        expected = llava.model.multi_modal_projector(hidden[:, 1:])
    assert hidden.shape[1] == 9
    torch.testing.assert_close(prepared.inputs_embeds[prepared.image_mask].view(2, 8, -1), expected)
    # every patch ends in one of the 8 tokens: one leads each (its first patch), the others are merged into it
    assert patch.last is not None
    slots = patch.last.origin[:, 1:] - 1
    for row in range(2):
        leads = sorted(int((slots[row] == s).nonzero()[0]) for s in range(8))
        assert leads == prepared.status[row].eq(0).nonzero().flatten().tolist()
    assert int((prepared.status == 2).sum()) == 0 and int((prepared.status == 1).sum()) == 2 * (N - 8)


def test_tower_with_a_pruning_encoder_method_and_per_row_budgets(llava, processor):
    prepared = prepare(llava, processor, images(), QUESTIONS, "tower", keep_per_row=[5, 8], encoder="random")
    assert prepared.kept == [5, 8]
    assert (prepared.status == 0).sum(dim=1).tolist() == [5, 8]
    assert (prepared.status == 2).sum(dim=1).tolist() == [N - 5, N - 8]  # random pruning drops, never merges
    alone = prepare(llava, processor, images()[1:], QUESTIONS[1:], "tower", keep=0.5, encoder="random")
    width = int(alone.attention_mask.sum())
    torch.testing.assert_close(prepared.inputs_embeds[1, -width:], alone.inputs_embeds[0], atol=1e-5, rtol=1e-5)


def test_tower_default_layers_keep_at_least_55_percent_each_and_end_two_before_the_feature_layer():
    from tokensift.methods import build

    tower = build("vision", "tower")
    assert tower.reducing_layers(256, 64, 11) == (3, 6, 9)  # DINOv2-small, 25 % kept
    assert tower.reducing_layers(256, 28, 11) == (3, 5, 7, 9)
    assert tower.reducing_layers(256, 13, 11) == (1, 3, 5, 7, 9)
    assert tower.reducing_layers(16, 4, 1) == (0,)  # the tiny tower: its one layer before the feature layer
    assert build("vision", "tower", layers=[2, 4]).reducing_layers(256, 64, 11) == (2, 4)


def test_tower_errors(llava, processor):
    from tokensift.errors import MethodUnsupportedError, UnknownMethodError
    from tokensift.methods import build
    from tokensift.vision.generic import prune_inputs

    for bad in ("3,x", [], [-1], True):
        with pytest.raises(ParameterError) as error:
            build("vision", "tower", layers=bad)
        assert error.value.option == "layers"
    with pytest.raises(UnknownMethodError, match="unknown encoder method 'nope'"):
        build("vision", "tower", encoder="nope")
    assert build("vision", "tower", layers="6,3").layers == (3, 6)
    with pytest.raises(ParameterError, match="before the feature layer 1"):
        prepare(llava, processor, images(1), QUESTIONS[:1], "tower", keep=0.5, layers=[1])
    with pytest.raises(MethodUnsupportedError, match="exactly 1"):  # ToMe removes at most half per layer
        prepare(llava, processor, images(1), QUESTIONS[:1], "tower", keep_tokens=1, encoder="tome")
    with pytest.raises(MethodUnsupportedError, match="inside the vision tower"):
        prune_inputs(llava, torch.tensor([[63] * N]), method="tower", pixel_values=torch.zeros(1, 3, 28, 28))
