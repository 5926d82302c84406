"""The vision models on real weights and real images (select with ``-m model``)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tokensift.encoder import reduce
from tokensift.models import load_model
from tokensift.vision import answer
from tokensift.vision.images import load_image

pytestmark = pytest.mark.model
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def dinov2():
    return load_model("dinov2-small")


@pytest.fixture(scope="module")
def llava():
    return load_model("llava-smol")


def test_dinov2_matches_the_onnx_backbone(dinov2):
    """The converted model's output equals the ONNX graph's backbone output (onnx's reference runtime)."""
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    from tokensift.models import EMBEDDED, _onnx_file

    graph = onnx.load(str(_onnx_file(EMBEDDED["dinov2-small"])))
    last = [n for n in graph.graph.node if n.name.startswith("/backbone/layernorm/")][-1]
    graph.graph.output.append(helper.make_tensor_value_info(last.output[0], onnx.TensorProto.FLOAT, None))
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    reference = ReferenceEvaluator(graph).run([last.output[0]], {"input_image": pixels})[0]
    with torch.no_grad():
        ours = dinov2.model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert np.abs(ours - reference).max() < 1e-4


def test_mctf_on_dinov2_keeps_the_cls_output_close(dinov2):
    from skimage import data

    from tokensift.models.vision import image_processor

    pixels = image_processor(224)([data.astronaut(), data.coffee()], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        full = dinov2.model(pixel_values=pixels).pooler_output
        with reduce(dinov2.model, "mctf", ratio=0.5) as patch:
            merged = dinov2.model(pixel_values=pixels).pooler_output
    assert patch.last is not None and patch.last.valid.sum(dim=1).tolist() == [128, 128]  # 257 tokens -> 128
    assert torch.nn.functional.cosine_similarity(merged, full).min() > 0.9


def test_llava_answers_easy_vqa(llava):
    from tokensift.vision import data

    questions = [q for q in data.questions("test") if q.answer in ("circle", "triangle", "rectangle")][:12]
    images = [load_image(q.image) for q in questions]
    full = answer(llava.model, llava.processor, images, [q.text for q in questions], max_new_tokens=4)
    right = sum(a.split()[0].strip(".").lower() == q.answer for a, q in zip(full.answers, questions, strict=True))
    assert right >= 9, full.answers
    pruned = answer(
        llava.model, llava.processor, images, [q.text for q in questions], "visionzip", keep=0.25, max_new_tokens=4
    )
    assert pruned.prepared.kept == [64] * 12 and pruned.prepared.visual_tokens == 256
    merged = answer(
        llava.model, llava.processor, images, [q.text for q in questions], "tower", keep=0.11, max_new_tokens=4
    )  # MCTF inside DINOv2 (layers 3, 5, 7, 9): 28 tokens reach the language model
    assert merged.prepared.kept == [28] * 12 and bool((merged.prepared.status == 1).any())
    same = sum(a.split()[:1] == b.split()[:1] for a, b in zip(merged.answers, full.answers, strict=True))
    assert same >= 9, (merged.answers, full.answers)


def test_cli_vision_json_html_and_bad_image(tmp_path):
    from PIL import Image
    from skimage import data

    image = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(image)
    page = tmp_path / "view.html"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokensift",
            "vision",
            str(image),
            "--question",
            "What is in the image?",
            "--method",
            "fastervlm",
            "--keep",
            "0.25",
            "--json",
            "--html",
            str(page),
            "--warmup",
            "1",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    facts = json.loads(run.stdout)
    assert facts["visual_tokens"] == 256 and facts["visual_tokens_kept"] == 64 and facts["answer"]
    assert facts["prefill_seconds"] > 0 and "decode_seconds_per_token" in facts and facts["warmup"] == 1
    assert "kept 64" in page.read_text() and "pruned 192" in page.read_text()
    broken = tmp_path / "broken.png"
    broken.write_bytes(image.read_bytes()[:200])
    bad = subprocess.run(
        [sys.executable, "-m", "tokensift", "vision", str(broken), "--question", "what?"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert bad.returncode != 0 and "damaged or truncated" in bad.stderr and "Traceback" not in bad.stderr
    with pytest.raises(Exception, match="not an image"):
        (tmp_path / "note.png").write_text("hello")
        load_image(tmp_path / "note.png")
