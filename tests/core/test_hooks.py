import pytest
import torch

from tokensift.errors import ModelError
from tokensift.hooks import _HANDLERS, AttentionCall, Route, attention_modules, layer_modules, observe_attention


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
    assert not _HANDLERS


def test_a_handler_that_answers_replaces_attention_and_newer_routes_see_calls_first(llama):
    ids = torch.randint(0, 64, (1, 10))
    module = layer_modules(llama)[1]
    seen: list[str] = []

    def zero(call: AttentionCall) -> tuple[torch.Tensor, None]:
        seen.append("zero")
        b, h, q, d = call.query.shape
        return torch.zeros(b, q, h, d), None

    def observe(call: AttentionCall) -> None:
        seen.append("observe")

    with torch.no_grad():
        reference = llama(ids).logits
        with Route(llama, {module: zero}):
            with Route(llama, {module: observe}) as inner:
                inner.hook(module, lambda *args: seen.append("hook"), pre=True)
                changed = llama(ids).logits
            assert llama.config._attn_implementation == "tokensift"  # the outer route still holds
            assert len(module._forward_pre_hooks) == 0  # the inner route's hook went with it
        assert llama.config._attn_implementation == "sdpa"
    assert seen == ["hook", "observe", "zero"]
    assert not torch.allclose(changed, reference)
    with torch.no_grad():
        assert torch.equal(llama(ids).logits, reference)


def test_a_handler_can_replace_the_mask(llama):
    ids = torch.randint(0, 64, (1, 8))
    modules = list(layer_modules(llama).values())

    def block_first(call: AttentionCall) -> None:
        n = call.key.shape[2]
        allowed = torch.ones(n, n, dtype=torch.bool).tril()
        allowed[1:, 0] = False
        call.mask = allowed[None, None, -call.query.shape[2] :]

    with torch.no_grad():
        reference = llama(ids).logits
        with Route(llama, dict.fromkeys(modules, block_first)):
            masked = llama(ids).logits
    assert torch.allclose(masked[0, 0], reference[0, 0], atol=1e-5)  # the first token sees only itself either way
    assert not torch.allclose(masked[0, 1:], reference[0, 1:])


def test_unknown_layer_unsupported_model_and_double_attach():
    from tests.conftest import tiny_llama

    model = tiny_llama()
    with pytest.raises(ModelError, match="layers \\[5\\] do not exist"), observe_attention(model, {5: print}):
        pass
    with pytest.raises(ModelError, match="no attention modules"):
        attention_modules(torch.nn.Linear(2, 2))
    route = Route(model, {}).attach()
    with pytest.raises(ModelError, match="attached already"):
        route.attach()
    route.detach()
    assert model.config._attn_implementation == "sdpa"
