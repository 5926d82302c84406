"""Visual-token selection in the LLM's space on tiny random LLaVA-OneVision, Idefics3 (SmolVLM), LLaVA and Qwen2-VL."""

import dataclasses

import pytest
import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    LlamaConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    SiglipVisionConfig,
)
from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

from tests.vision.test_pipeline import tiny_llava
from tokensift.errors import MethodUnsupportedError
from tokensift.vision.fastv import fastv_prefill, greedy
from tokensift.vision.generic import prune_inputs

IMAGE = 63


def text_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=1,
    )  # fmt: skip


def onevision() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    vision = SiglipVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=28, patch_size=7
    )
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text_config(), image_token_index=IMAGE, image_grid_pinpoints=[[28, 28]],
        vision_feature_layer=-1, vision_feature_select_strategy="full",
    )  # fmt: skip
    pixels = torch.randn(2, 2, 3, 28, 28, generator=torch.Generator().manual_seed(1))  # base image + one tile
    return LlavaOnevisionForConditionalGeneration(config).eval(), {
        "pixel_values": pixels, "image_sizes": torch.tensor([[28, 28], [28, 28]])
    }  # fmt: skip


def idefics3() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    vision = Idefics3VisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=28, patch_size=7
    )
    config = Idefics3Config(vision_config=vision, text_config=text_config(), scale_factor=2, image_token_id=IMAGE)
    pixels = torch.randn(2, 1, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    return Idefics3ForConditionalGeneration(config).eval(), {"pixel_values": pixels}


def llava() -> tuple[torch.nn.Module, dict]:
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    return tiny_llava(), {"pixel_values": pixels}


def qwen2vl(grids=((1, 4, 4), (1, 4, 4))) -> tuple[torch.nn.Module, dict]:
    """Qwen2-VL: multimodal rotary positions (time, height, width; ``mrope_section`` splits the head's rotary
    pairs among them), 2x2 patches merged 2x2 into one image token."""
    torch.manual_seed(0)
    rope = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 1, 1]}
    text = text_config().to_dict() | {"rope_parameters": rope}
    vision = {"depth": 2, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "patch_size": 2, "spatial_merge_size": 2}
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=IMAGE, video_token_id=62, vision_start_token_id=60,
        vision_end_token_id=61,
    )  # fmt: skip
    grid = torch.tensor(grids)
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 2 * 2, generator=torch.Generator().manual_seed(1))
    return Qwen2VLForConditionalGeneration(config).eval(), {"pixel_values": pixels, "image_grid_thw": grid}


MODELS = {"llava-onevision": onevision, "idefics3": idefics3, "llava": llava, "qwen2-vl": qwen2vl}


def own_inputs(name: str, ids: torch.Tensor) -> dict:
    """What the model's own forward needs beside the processor's image inputs (Qwen2-VL: the token types)."""
    return {"mm_token_type_ids": (ids == IMAGE).int()} if name == "qwen2-vl" else {}


def prompts(model, image_inputs) -> torch.Tensor:
    """Two rows, text + as many image tokens as the model makes of each image + text."""
    with torch.no_grad():
        features = model.get_image_features(**image_inputs).pooler_output
    n = sum(f.reshape(-1, f.shape[-1]).shape[0] for f in features) // 2
    rows = [[5, 6] + [IMAGE] * n + [7, 8, 9], [10, 11] + [IMAGE] * n + [12, 13, 14]]
    return torch.tensor(rows)


@pytest.mark.parametrize("name", list(MODELS))
def test_everything_kept_equals_the_models_own_forward(name):
    model, image_inputs = MODELS[name]()
    ids = prompts(model, image_inputs)
    prepared = prune_inputs(model, ids, **image_inputs)
    with torch.no_grad():
        reference = model(input_ids=ids, **own_inputs(name, ids), **image_inputs).logits[:, -1]
    torch.testing.assert_close(fastv_prefill(model, prepared, None).logits, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["divprune", "mmtok", "random"])
def test_selection_keeps_the_budget_and_generate_runs(name, method):
    model, image_inputs = MODELS[name]()
    ids = prompts(model, image_inputs)
    n = int((ids[0] == IMAGE).sum())
    prepared = prune_inputs(model, ids, method=method, keep=0.5, **image_inputs)
    assert prepared.kept == [round(n / 2)] * 2
    assert prepared.image_mask.sum(dim=1).tolist() == prepared.kept
    assert prepared.inputs_embeds.shape[1] == ids.shape[1] - (n - round(n / 2))
    positions = {} if prepared.position_ids is None else {"position_ids": prepared.position_ids}
    with torch.no_grad():
        generated = model.generate(
            inputs_embeds=prepared.inputs_embeds, attention_mask=prepared.attention_mask, max_new_tokens=3,
            do_sample=False, pad_token_id=0, **positions,
        )  # fmt: skip
    ours = greedy(model, fastv_prefill(model, prepared, None), 3, eos=[1])
    assert [until_end(r) for r in generated.tolist()] == [until_end(r) for r in ours.tolist()]


def until_end(row: list[int]) -> list[int]:
    """A generated row up to and including its end token (1): generate() pads after it, greedy() repeats it."""
    return row[: row.index(1) + 1] if 1 in row else row


@pytest.mark.parametrize("name", list(MODELS))
def test_fastv_inside_any_of_them(name):
    from tokensift.methods import build

    model, image_inputs = MODELS[name]()
    ids = prompts(model, image_inputs)
    n = int((ids[0] == IMAGE).sum())
    prefill = fastv_prefill(
        model, prune_inputs(model, ids, **image_inputs), build("vision", "fastv", layer=1), keep=0.5
    )
    assert prefill.kept == [round(n / 2)] * 2
    assert all(layer.keys.shape[2] == ids.shape[1] - (n - round(n / 2)) for layer in prefill.cache.layers)


def test_tower_methods_are_refused_outside_llava():
    model, image_inputs = idefics3()
    with pytest.raises(MethodUnsupportedError, match="fastervlm reads the vision tower"):
        prune_inputs(model, prompts(model, image_inputs), method="fastervlm", keep=0.5, **image_inputs)


def test_qwen2vl_kept_tokens_keep_their_grid_positions():
    """Rows with images of different sizes, left-padded: the pruned prefill equals the model's own forward over
    the whole prompt with the dropped image tokens masked out (each kept token at its M-RoPE position)."""
    model, image_inputs = qwen2vl(grids=((1, 4, 4), (1, 4, 6)))
    rows = [[5, 6, 60] + [IMAGE] * 4 + [61, 7, 8, 9], [10, 11, 60] + [IMAGE] * 6 + [61, 12, 13, 14]]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = (ids != 0).long()
    prepared = prune_inputs(model, ids, mask, method="divprune", keep=0.5, **image_inputs)
    assert prepared.kept == [2, 3] and prepared.position_ids is not None
    full_positions, _ = model.model.get_rope_index(
        ids, mm_token_type_ids=(ids == IMAGE).int(), image_grid_thw=image_inputs["image_grid_thw"], attention_mask=mask
    )
    masked = mask.clone()
    for row in range(2):
        image_at = torch.nonzero(ids[row] == IMAGE).flatten()
        masked[row, image_at[prepared.status[row, : len(image_at)] == 2]] = 0
        assert prepared.position_ids[:, row, -len(rows[row]) + len(image_at) - prepared.kept[row] :].tolist() == [
            p[masked[row].bool()].tolist() for p in full_positions[:, row]
        ]
    with torch.no_grad():
        reference = model(
            input_ids=ids, attention_mask=masked, position_ids=full_positions, mm_token_type_ids=(ids == IMAGE).int(),
            **image_inputs,
        ).logits[:, -1]  # fmt: skip
    torch.testing.assert_close(fastv_prefill(model, prepared, None).logits, reference, atol=1e-5, rtol=1e-5)
    counted = dataclasses.replace(prepared, position_ids=None)  # positions counting the kept tokens: not the same
    assert (fastv_prefill(model, counted, None).logits - reference).abs().max() > 1e-4  # 30x the tolerance above


def test_videos_are_refused_for_qwen2vl():
    from tokensift.errors import InputError

    model, image_inputs = qwen2vl()
    ids = prompts(model, image_inputs)
    with pytest.raises(InputError, match="videos"):
        prune_inputs(model, ids, method="random", keep=0.5, video_grid_thw=torch.tensor([[1, 4, 4]]), **image_inputs)
