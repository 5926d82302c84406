import pytest
import torch

from tokensift.errors import ModelError, ParameterError, UnknownMethodError
from tokensift.hooks import attention_modules, observe_attention
from tokensift.methods import Method, get_method, list_methods, register


def test_observation_leaves_logits_unchanged_and_restores_on_error(llama):
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        reference = llama(ids).logits
    calls = []
    with pytest.raises(RuntimeError, match="boom"), observe_attention(llama, {0: lambda *a: calls.append(a[1].shape)}):
        with torch.no_grad():
            observed = llama(ids).logits
        raise RuntimeError("boom")
    assert torch.equal(observed, reference)
    assert calls == [torch.Size([1, 4, 12, 8])]
    assert llama.config._attn_implementation == "sdpa"
    with torch.no_grad():
        llama(ids)
    assert len(calls) == 1  # observer removed


def test_unknown_layer_and_unsupported_model():
    from tests.conftest import tiny_llama

    with pytest.raises(ModelError, match="layers \\[5\\] do not exist"), observe_attention(tiny_llama(), {5: print}):
        pass
    with pytest.raises(ModelError, match="no attention modules"):
        attention_modules(torch.nn.Linear(2, 2))


def test_registry_lists_and_finds_random():
    method = get_method("random", "kv")
    assert method.as_dict()["score"] == "random_scores"
    assert not method.needs_attention
    assert method in list_methods("kv") and method in list_methods()


def test_registry_errors():
    with pytest.raises(UnknownMethodError) as info:
        get_method("nope", "kv")
    known = ", ".join(m.name for m in list_methods("kv"))
    assert str(info.value) == f"unknown kv method 'nope'; known: {known}" and "random" in known
    with pytest.raises(ParameterError, match="unknown target"):
        list_methods("audio")
    with pytest.raises(ValueError, match="already registered"):
        register(get_method("random", "kv"))
    assert isinstance(get_method("random", "kv"), Method)
