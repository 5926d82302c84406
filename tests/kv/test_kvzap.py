"""KVzap: a linear surrogate per layer scores the prefill's hidden states; its training fit and its checks."""

import pytest
import torch

from tests.kv.test_kvzip import assert_keeps
from tokensift.errors import MethodUnsupportedError, ParameterError
from tokensift.kv import compress, press_from
from tokensift.kv.kvzap_train import fit, recall
from tokensift.kv.methods.kvzap import load_surrogate, save_surrogate
from tokensift.select import global_indices


def surrogate_file(tmp_path, layers=2, width=32, kv_heads=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(kv_heads, width, generator=generator) for _ in range(layers)]
    biases = [torch.randn(kv_heads, generator=generator) for _ in range(layers)]
    path = tmp_path / f"surrogate-{layers}-{width}-{kv_heads}.safetensors"
    save_surrogate(path, weights, biases, {"model": "tiny", "layers": layers})
    return path, weights, biases


def test_kvzap_keeps_the_model_wide_top_of_its_predicted_scores(tmp_path, llama):
    path, weights, biases = surrogate_file(tmp_path)
    ids = torch.randint(2, 64, (1, 20), generator=torch.Generator().manual_seed(5))
    seen = {}
    hooks = [
        layer.self_attn.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: seen.__setitem__(i, kwargs["hidden_states"][0]), with_kwargs=True
        )
        for i, layer in enumerate(llama.model.layers)
    ]
    with torch.no_grad():
        llama(ids)
    for hook in hooks:
        hook.remove()
    predicted = [(seen[i] @ weights[i].T + biases[i]).T for i in range(2)]
    press = press_from("kvzap", ratio=0.75, weights=str(path))
    assert_keeps(llama, ids, press, global_indices(predicted, 5, protect_first=4), 5)


def test_kvzap_refuses_a_surrogate_that_does_not_fit_the_model(tmp_path, llama):
    ids = torch.randint(2, 64, (1, 12))
    three_layers, _, _ = surrogate_file(tmp_path, layers=3)
    wrong = press_from("kvzap", ratio=0.5, weights=str(three_layers))
    with pytest.raises(MethodUnsupportedError, match="3 layers"), torch.no_grad(), compress(llama, wrong):
        llama(ids)
    too_wide, _, _ = surrogate_file(tmp_path, width=48)
    wrong = press_from("kvzap", ratio=0.5, weights=str(too_wide))
    with pytest.raises(MethodUnsupportedError, match="48-wide"), torch.no_grad(), compress(llama, wrong):
        llama(ids)
    with pytest.raises(ParameterError, match="does not exist"):
        load_surrogate(str(tmp_path / "missing.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ParameterError, match="not a kvzap surrogate"):
        load_surrogate(str(tmp_path / "junk.safetensors"))


def test_the_ridge_fit_recovers_a_linear_map_and_recall_counts_shared_selections():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(200, 6, generator=generator, dtype=torch.float64)
    true_w, true_b = torch.randn(6, 2, generator=generator, dtype=torch.float64), torch.tensor([0.5, -1.0])
    y = x @ true_w + true_b.double()
    ones = torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], 1)
    (weight,), (bias,) = fit([ones.T @ ones], [ones.T @ y], ridge=0.0)
    assert torch.allclose(weight, true_w.T.float(), atol=1e-5) and torch.allclose(bias, true_b, atol=1e-5)
    scores = [torch.rand(2, 16, generator=generator) for _ in range(3)]
    assert recall(scores, scores, 0.25) == 1.0
    assert recall(scores, [-s for s in scores], 0.25, protect_first=0) < 0.5
