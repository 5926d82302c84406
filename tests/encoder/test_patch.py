"""Token reduction inside tiny random-weight HF encoders: exactness, padding, sizes, sources, errors."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    ViTConfig,
    ViTModel,
)

from tests.conftest import tiny_llama
from tokensift.encoder import apply, reduce, remove
from tokensift.encoder.embed import mean_pool
from tokensift.encoder.methods.tome import ToMe
from tokensift.errors import InputError, ModelError, ParameterError, UnknownMethodError
from tokensift.methods import build, list_methods

METHODS = [m.name for m in list_methods("encoder")]
MERGING = [m.name for m in list_methods("encoder") if m.cls.merges]
PROPAGATING = [m.name for m in list_methods("encoder") if m.cls.propagates]


def tiny_bert(layers: int = 3) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


@pytest.fixture(scope="module")
def bert() -> BertModel:
    return tiny_bert()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (3, 24), generator=gen)
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[1, 15:] = 0
    mask[2, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def run(model, **batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def test_every_method_is_registered():
    assert METHODS and all(m.paper or m.baseline for m in list_methods("encoder"))


@pytest.mark.parametrize("method", METHODS)
def test_ratio_zero_leaves_outputs_identical(bert, batch, method):
    reference = run(bert, **batch)
    with reduce(bert, method, ratio=0.0) as patch:
        out = run(bert, **batch)
    assert torch.equal(out, reference)
    assert patch.last is not None and not patch.last.reduced
    with reduce(bert, method, r=0):
        assert torch.equal(run(bert, **batch), reference)


@pytest.mark.parametrize("method", METHODS)
def test_each_padded_row_equals_that_row_alone(bert, batch, method):
    with reduce(bert, method, ratio=0.5) as patch:
        out = run(bert, **batch)
        state = patch.last
        assert state is not None
        for row in range(3):
            n = int(batch["attention_mask"][row].sum())
            alone = run(bert, input_ids=batch["input_ids"][row : row + 1, :n])
            kept = int(state.valid[row].sum())
            assert kept == alone.shape[1]
            torch.testing.assert_close(out[row, :kept], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_sizes_sources_and_padding(bert, batch, method):
    with reduce(bert, method, ratio=0.6) as patch:
        run(bert, **batch)
    state = patch.last
    assert state is not None
    real = batch["attention_mask"].bool()
    # padding is never merged into, nor kept as, a real token
    assert (state.origin[~real] == -1).all()
    assert (state.sizes[~state.valid] == 0).all()
    for row in range(3):
        groups = state.groups(row)
        members = sorted(i for g in groups for i in g)
        assert all(real[row, i] for i in members)
        assert groups[0] == [0]  # [CLS] stays first and alone
        last = int(real[row].sum()) - 1
        assert [last] in groups  # [SEP] is protected too
        if method not in PROPAGATING:
            assert state.sizes[row, : len(groups)].tolist() == [float(len(g)) for g in groups]
    if method in PROPAGATING:  # dropped tokens live on as a share alpha of their size in the kept ones
        alpha = build("encoder", method).alpha
        dropped = real.sum(dim=1) - state.valid.sum(dim=1)
        kept_sizes = state.sizes.sum(dim=1)
        assert (kept_sizes > state.valid.sum(dim=1)).all()
        assert (kept_sizes <= state.valid.sum(dim=1) + alpha * dropped * 1.0001 + 1e-4).all()
    elif method in MERGING:  # merging keeps every input token somewhere: sizes sum to the real token count
        assert state.sizes.sum(dim=1).tolist() == real.sum(dim=1).float().tolist()
    else:  # pruning drops tokens: every kept token stands for itself
        assert set(state.sizes[state.valid].tolist()) == {1.0}
    targets = torch.round(real.sum(dim=1) * 0.4).long().clamp_min(3)  # never below [CLS], [SEP] + 1 token
    assert state.valid.sum(dim=1).tolist() == targets.tolist()


def test_token_counts_per_layer_follow_the_schedules(bert, batch):
    with reduce(bert, "tome", r=2) as patch:
        run(bert, **batch)
    assert patch.last is not None
    attention, mlp = patch.last.layer_tokens(reduce_inside=True)
    assert attention[0].tolist() == [24, 22, 20]
    assert mlp[0].tolist() == [22, 20, 18]  # BERT reduces between attention and MLP
    with reduce(bert, "random", per_layer=[0.0, 0.5, 0.0]) as patch:
        run(bert, **batch)
    assert patch.last is not None
    assert patch.last.layer_tokens(reduce_inside=True)[0][0].tolist() == [24, 24, 12]
    with reduce(bert, "evit", ratio=0.5, layers=[2]) as patch:
        run(bert, **batch)
    assert patch.last is not None and list(patch.last.kept) == [2]


def test_proportional_attention_uses_log_sizes(bert, batch):
    with reduce(bert, ToMe(proportional_attention=True), r=4) as patch:
        run(bert, **batch)
    state = patch.last
    assert state is not None
    bias = state.bias(torch.float32, proportional=True)[:, 0, 0]
    assert torch.allclose(bias[state.valid], state.sizes[state.valid].log())
    assert torch.isinf(bias[~state.valid]).all()


def test_mean_pool_with_sizes_equals_plain_mean_over_the_input_tokens():
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    pooled = mean_pool(hidden, torch.tensor([[3.0, 1.0, 0.0]]))
    assert torch.allclose(pooled, torch.nn.functional.normalize(torch.tensor([[0.75, 0.25]]), dim=-1))


def test_apply_remove_restore_the_model(bert, batch):
    reference = run(bert, **batch)
    patch = apply(bert, "pitome", ratio=0.5)
    assert run(bert, **batch).shape[1] < reference.shape[1]
    with pytest.raises(ModelError, match="already has a token-reduction patch"):
        apply(bert, "tome", ratio=0.5)
    remove(bert)
    assert torch.equal(run(bert, **batch), reference)
    assert bert.config._attn_implementation == "sdpa"
    assert patch.last is not None
    remove(bert)  # no patch: nothing to do
    with pytest.raises(RuntimeError, match="boom"), reduce(bert, "tome", ratio=0.5):
        raise RuntimeError("boom")
    assert torch.equal(run(bert, **batch), reference)


VISION = [
    (ViTModel, ViTConfig, {}),
    (CLIPVisionModel, CLIPVisionConfig, {}),
    (Dinov2Model, Dinov2Config, {"mlp_ratio": 2}),
    (Dinov2WithRegistersModel, Dinov2WithRegistersConfig, {"mlp_ratio": 2, "num_register_tokens": 3}),
]


@pytest.mark.parametrize("model_class,config_class,extra", VISION, ids=[v[0].__name__ for v in VISION])
@pytest.mark.parametrize("method", METHODS)
def test_vision_encoders(model_class, config_class, extra, method):
    torch.manual_seed(0)
    config = config_class(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        **extra,
    )
    model = model_class(config).eval()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = run(model, pixel_values=pixels)
    prefix = 1 + extra.get("num_register_tokens", 0)
    with reduce(model, method, ratio=0.0):
        assert torch.equal(run(model, pixel_values=pixels), reference)
    with reduce(model, method, ratio=0.5) as patch:
        out = run(model, pixel_values=pixels)
        alone = run(model, pixel_values=pixels[1:])
    assert out.shape == (2, (16 + prefix) // 2, 32)  # 16 patches + [CLS] (+ registers), half kept
    torch.testing.assert_close(out[1:], alone, atol=1e-5, rtol=1e-5)
    # [CLS] and the registers stay first, alone: never merged nor dropped
    assert patch.last is not None and patch.last.groups(0)[:prefix] == [[i] for i in range(prefix)]


def test_mctf_fuses_both_ways_and_follows_chains():
    from tokensift.select.matching import bidirectional_matching

    # 6 tokens, A = 0, 2, 4 and B = 1, 3, 5; token 0 protected.
    scores = torch.zeros(1, 6, 6)
    scores[0, 2, 3] = scores[0, 3, 2] = 0.9  # A2 -> B3 first, then B3 -> its best A that stayed
    scores[0, 4, 3] = scores[0, 3, 4] = 0.8
    scores[0, 4, 5] = 0.5
    valid = torch.ones(1, 6, dtype=torch.bool)
    protected = torch.zeros(1, 6, dtype=torch.bool)
    protected[0, 0] = True
    target = bidirectional_matching(scores, torch.tensor([2]), valid=valid, protected=protected)
    # step 1 (r // 2 = 1): A2 -> B3; step 2: B3 -> A4 (A2 moved, so it is no destination); A2 follows B3 to A4
    assert target.tolist() == [[0, 1, 4, 4, 4, 5]]


def test_unsupported_architectures_are_named():
    with pytest.raises(ModelError, match="supported are BERT-family encoders"):
        reduce(tiny_llama(), "tome", ratio=0.5).__enter__()
    with pytest.raises(ModelError, match="not a Hugging Face model"):
        reduce(torch.nn.Linear(2, 2), "tome", ratio=0.5).__enter__()


def test_bad_options(bert, batch):
    with pytest.raises(ParameterError, match="ratio"):
        apply(bert, "tome", ratio=1.5)
    with pytest.raises(ParameterError, match="exactly one"):
        apply(bert, "tome")
    with pytest.raises(UnknownMethodError, match="unknown encoder method 'nope'"):
        apply(bert, "nope", ratio=0.5)
    with pytest.raises(ParameterError, match="tome takes no option 'colour'"):
        apply(bert, "tome", ratio=0.5, colour="red")
    with reduce(bert, "tome", ratio=0.5), pytest.raises(InputError, match="2-D attention mask"):
        bert(input_ids=batch["input_ids"], attention_mask=torch.ones(3, 1, 24, 24))
    assert getattr(bert, "_tokensift_patch", None) is None


def test_gtp_propagates_a_share_alpha_of_what_it_drops(bert, batch):
    with reduce(bert, "gtp", ratio=0.5, alpha=0.0) as plain:
        dropped = run(bert, **batch)
    with reduce(bert, "gtp", ratio=0.5, alpha=0.1) as spread:
        propagated = run(bert, **batch)
    assert plain.last is not None and spread.last is not None
    # the first reduction keeps the same tokens either way; alpha = 0 is plain pruning (sizes stay 1)
    assert set(plain.last.sizes[plain.last.valid].tolist()) == {1.0}
    assert (spread.last.sizes[spread.last.valid] >= 1.0).all() and (spread.last.sizes > 1.0).any()
    assert not torch.allclose(dropped, propagated)


@pytest.mark.parametrize("model_class,config_class,extra", VISION[:3], ids=[v[0].__name__ for v in VISION[:3]])
def test_mctf_decides_with_the_attention_of_the_layer_the_tokens_enter(model_class, config_class, extra, monkeypatch):
    """One-step-ahead: the queries and keys MCTF sees after layer 0 are layer 1's, computed from layer 0's output
    through layer 1's own norm and projections (the unpatched model's hidden states)."""
    from tokensift.encoder.layout import find_layout
    from tokensift.encoder.methods.mctf import MCTF

    torch.manual_seed(0)
    config = config_class(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, image_size=32,
        patch_size=8, **extra,
    )  # fmt: skip
    model = model_class(config).eval()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after_first = model(pixel_values=pixels, output_hidden_states=True).hidden_states[1]
    layout = find_layout(model)
    attention = layout.attention[1]
    assert layout.pre_attention is not None
    normed = layout.pre_attention[1](after_first)
    expected_q = attention.q_proj(normed).view(2, -1, 4, 8).transpose(1, 2)
    expected_k = attention.k_proj(normed).view(2, -1, 4, 8).transpose(1, 2)
    seen: list = []
    plan = MCTF.plan
    monkeypatch.setattr(MCTF, "plan", lambda self, ctx: seen.append(ctx) or plan(self, ctx))
    for ahead in (True, False):
        seen.clear()
        with torch.no_grad(), reduce(model, MCTF(one_step_ahead=ahead), per_layer=[0.25, 0.0, 0.0]):
            run(model, pixel_values=pixels)
        assert len(seen) == 1 and seen[0].layer == 0
        same = torch.allclose(seen[0].queries, expected_q, atol=1e-5) and torch.allclose(
            seen[0].keys, expected_k, atol=1e-5
        )
        assert same == ahead  # without it: layer 0's own queries and keys
