"""Sparse backward: the selected tokens' loss is the full model's, and with every position selected the
gradients are the full loss's, on a Llama and on a Gemma-3 whose sliding window is shorter than the input."""

import pytest
import torch

from tests.conftest import tiny_gemma3, tiny_llama
from tokensift.hooks import layer_modules
from tokensift.methods import build
from tokensift.training.loss import SelectiveLoss, full_loss
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.sparse import select_positions, sparse_step
from tokensift.training.stats import IGNORE, token_losses

MODELS = {"llama": tiny_llama, "gemma3": lambda: tiny_gemma3(window=4)}


def batch(vocab=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = ids.clone()
    labels[:, :3] = IGNORE
    labels[mask == 0] = IGNORE
    return ids, mask, labels


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", MODELS)
def test_every_position_selected_gives_the_full_loss_and_its_gradients(name):
    model = MODELS[name]()
    ids = torch.randint(2, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    full_loss(model(input_ids=ids).logits, ids).backward()
    expected = grads(model)
    model.zero_grad()
    step = sparse_step(model, ids, ids, build("training", "none"))
    step.loss.backward()
    got = grads(model)
    assert step.selected == 18
    assert abs(float(step.loss.detach()) - float(full_loss(model(input_ids=ids).logits, ids).detach())) < 1e-5
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("policy", ["eslm", "random"])
def test_selected_tokens_loss_equals_the_full_models_loss_on_them(name, policy):
    model = MODELS[name]()
    ids, mask, labels = batch()
    chosen = build("training", policy, keep=0.3)
    step = sparse_step(model, ids, labels, chosen, attention_mask=mask)
    with torch.no_grad():
        losses, valid = token_losses(model(input_ids=ids, attention_mask=mask).logits, labels)
    assert step.selected == round(0.3 * int(valid.sum())) == int(step.mask.sum())
    assert not bool((step.mask & ~valid).any())
    expected = float(losses[step.mask].mean())
    assert abs(float(step.loss.detach()) - expected) < 1e-5
    masked = SelectiveLoss(build("training", policy, keep=0.3))
    with torch.no_grad():
        value = masked(model(input_ids=ids, attention_mask=mask), labels)
    assert torch.equal(masked.last_mask, step.mask)
    assert abs(float(value) - expected) < 1e-5


def test_sparse_gradients_reach_the_weights_and_differ_only_through_unselected_context():
    model = tiny_llama()
    ids, mask, labels = batch()
    step = sparse_step(model, ids, labels, build("training", "eslm", keep=0.3), attention_mask=mask)
    step.loss.backward()
    sparse = grads(model)
    model.zero_grad()
    masked = SelectiveLoss(build("training", "eslm", keep=0.3))
    masked(model(input_ids=ids, attention_mask=mask), labels).backward()
    exact = grads(model)
    # every weight learns in the sparse pass; the lower layers' gradients differ from the masked full pass
    # because the unselected positions' keys and values are constants there
    assert set(sparse) == set(exact) and all(float(g.abs().sum()) > 0 for g in sparse.values())
    name = "model.layers.0.mlp.up_proj.weight"
    assert float((sparse[name] - exact[name]).abs().max()) > 1e-6


def test_select_positions_pads_each_row_with_its_last_selection():
    mask = torch.tensor([[False, True, False, True], [False, False, False, False], [True, False, False, False]])
    positions, real = select_positions(mask)
    assert positions.tolist() == [[1, 3], [0, 0], [0, 0]]
    assert real.tolist() == [[True, True], [False, False], [True, False]]


@pytest.mark.parametrize("name", MODELS)
def test_labelled_context_keeps_every_gradient_path_through_the_response(name):
    """With every token labelled, recomputing all labelled positions (the loss still on 30 %) is the exact
    gradient of the masked loss; on a prompt-plus-response batch it back-propagates the response only."""
    model = MODELS[name]()
    ids = torch.randint(2, 64, (2, 10), generator=torch.Generator().manual_seed(2))
    policy = build("training", "eslm", keep=0.3)
    masked = SelectiveLoss(policy)
    masked(model(input_ids=ids), ids).backward()
    expected = grads(model)
    model.zero_grad()
    step = sparse_step(model, ids, ids, policy, context="labelled")
    step.loss.backward()
    assert torch.equal(step.mask, masked.last_mask) and step.backward_positions == 18 and step.selected == 5
    for key, value in grads(model).items():
        torch.testing.assert_close(value, expected[key], atol=1e-6, rtol=1e-4)
    ids, mask, labels = batch()
    step = sparse_step(model, ids, labels, policy, attention_mask=mask, context="labelled")
    with torch.no_grad():
        losses, valid = token_losses(model(input_ids=ids, attention_mask=mask).logits, labels)
    assert step.backward_positions == int(valid.sum()) and step.selected == round(0.3 * int(valid.sum()))
    assert abs(float(step.loss.detach()) - float(losses[step.mask].mean())) < 1e-5


def hold(out, held):
    """A projection's ``[B, T, H*D]`` or a key norm's ``[B, H, T, D]`` with the positions not ``held`` detached."""
    held = held[:, :, None] if out.dim() == 3 else held[:, None, :, None]
    return torch.where(held, out, out.detach())


class Chosen(TokenPolicy):
    """A fixed selection, so the rows can hold very different numbers of selected tokens."""

    name = "chosen"

    def __init__(self, mask):
        self.mask = mask

    def scores(self, stats):
        return self.mask.float()

    def select(self, stats):
        return self.mask


@pytest.mark.parametrize("name", MODELS)
def test_ragged_rows_get_the_gradient_of_the_loss_with_unselected_keys_and_values_held_constant(name):
    """Rows padded to the longest selection: the repeated entries must not add their gradient again. The
    reference is a full forward whose unselected positions' keys and values (after any key norm) are detached."""
    model = MODELS[name]()
    ids = torch.randint(2, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    labels = ids.clone()
    labels[:, :2] = IGNORE
    chosen = torch.zeros(2, 11, dtype=torch.bool)
    chosen[0, 2:10] = True
    chosen[1, 4] = True
    sparse_step(model, ids, labels, Chosen(chosen)).loss.backward()
    sparse = grads(model)
    model.zero_grad()
    held = torch.nn.functional.pad(chosen, (0, 1))
    hooks = []
    for layer in layer_modules(model).values():
        key = getattr(layer, "k_norm", None) or layer.k_proj
        for module in (key, layer.v_proj):
            hooks.append(module.register_forward_hook(lambda m, i, out: hold(out, held)))
    try:
        losses, _ = token_losses(model(input_ids=ids).logits, labels)
        (losses[chosen].mean()).backward()
    finally:
        for hook in hooks:
            hook.remove()
    expected = grads(model)
    assert set(sparse) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(sparse[key], value, atol=1e-6, rtol=1e-4)
