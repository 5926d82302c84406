"""Integration tests on the embedded models (select with ``-m model``; short inputs keep them quick)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.core.capture import window_attention_scores
from tokensift.models import EMBEDDED, load_model, prefix_token_id
from tokensift.scores import lm_scores

pytestmark = pytest.mark.model

TEXT = (
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. At 330 metres it was the tallest "
    "structure in the world for forty-one years, until the Chrysler Building in New York overtook it in 1930. "
    "Gustave Eiffel's company designed and built it, and millions of people visit it every year."
)


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_embedded_models_load_and_match_their_specs(name):
    loaded = load_model(name)
    config = loaded.model.config
    config = getattr(config, "text_config", None) or config
    spec = EMBEDDED[name]
    assert (config.num_hidden_layers, config.num_attention_heads) == (spec.layers, spec.heads)
    assert getattr(config, "num_key_value_heads", config.num_attention_heads) == spec.kv_heads
    if spec.kind == "vision-encoder":  # a ViT's positions: its table's patches + [CLS]
        assert (config.image_size // config.patch_size) ** 2 + 1 == spec.context
    else:
        assert config.max_position_embeddings == spec.context
    params = sum(p.numel() for p in loaded.model.parameters()) / 1e6
    assert abs(params - spec.params_m) < 1
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_surprisal_is_minus_log_softmax_of_the_models_own_logits(smollm2):
    model, tokenizer = smollm2
    ids = torch.tensor(tokenizer(TEXT, add_special_tokens=False).input_ids)
    prefix = prefix_token_id(tokenizer, smollm2.spec)
    assert prefix == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    scores = lm_scores(model, ids, prefix_id=prefix)
    with torch.no_grad():
        logits = model(torch.cat([torch.tensor([prefix]), ids])[None]).logits[0, :-1]
    expected = -torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)), ids]
    torch.testing.assert_close(scores.surprisal.double(), expected, atol=1e-5, rtol=0)
    assert 5 < scores.perplexity < 60


def test_windowed_scoring_matches_unwindowed_where_both_fit(smollm2):
    model, tokenizer = smollm2
    ids = torch.tensor(tokenizer(TEXT * 2, add_special_tokens=False).input_ids)
    prefix = prefix_token_id(tokenizer, smollm2.spec)
    full = lm_scores(model, ids, prefix_id=prefix)
    windowed = lm_scores(model, ids, prefix_id=prefix, window=64, stride=32)
    assert len(windowed.windows) >= 3
    torch.testing.assert_close(windowed.surprisal[:64], full.surprisal[:64], atol=1e-4, rtol=0)
    for start, stop, first in windowed.windows[1:]:
        alone = lm_scores(model, ids[start:stop], prefix_id=prefix)
        torch.testing.assert_close(windowed.surprisal[first:stop], alone.surprisal[first - start :], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_observation_window_matches_eager_attention_on_real_models(name):
    model, tokenizer = load_model(name)
    ids = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False).input_ids
    scores = window_attention_scores(model, ids, window=8)
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            attentions = model(ids, output_attentions=True).attentions
    finally:
        model.config._attn_implementation = "sdpa"
    kv = model.config.num_key_value_heads
    for layer, attn in enumerate(attentions):
        b, h, _, t = attn.shape
        reference = attn[:, :, -8:].sum(2).view(b, kv, h // kv, t).mean(2)
        torch.testing.assert_close(scores[layer], reference, atol=1e-4, rtol=0)


def test_cli_inspect_writes_json_and_html(tmp_path):
    source = tmp_path / "text.txt"
    source.write_text(TEXT + "\nERROR disk /dev/sda1 failed at 03:14\n")
    page = tmp_path / "out" / "view.html"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "tokensift", "inspect", str(source), "--json", "--html", str(page), "--lines"],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    doc = json.loads(result.stdout)
    assert doc["model"] == "smollm2-135m" and not doc["truncated"]
    assert "".join(t["text"] for t in doc["tokens"]) == source.read_text()
    assert all(t["surprisal"] is not None for t in doc["tokens"])
    assert [r["line"] for r in doc["lines"]] == [1, 2] and sorted(r["rank"] for r in doc["lines"]) == [1, 2]
    assert f"perplexity {doc['perplexity']:.2f}" in result.stderr.decode()
    assert page.read_text().startswith("<!DOCTYPE html>")
