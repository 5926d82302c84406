"""``tokensift demo``: the main job on the embedded model, with no arguments.

Inspects a real text (a Paul Graham essay from the evaluation data, else WikiText-2, else a paragraph
of our own) and writes the HTML heat map. Later capabilities add their steps here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule

from tokensift.bench.data import find_data_dir
from tokensift.inputs import read_text

OWN_TEXT = (
    "The lighthouse keeper wrote the same line in his log every night for thirty-one years: lamp lit, "
    "sea calm, no ships. On the night of 4 March 1911 the entry reads differently. The lamp was lit, the "
    "sea was calm, and a brass band was playing on the rocks below the tower. Nobody in the village ever "
    "admitted to owning a trumpet, and the keeper never mentioned the band again."
)
EXCERPT_CHARS = 1800


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The first ``limit`` characters, cut back to the end of a sentence or line."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("\n"))
    return cut[: end + 1] if end > limit // 2 else cut


def pick_text(data_dir: Path | None) -> tuple[str, str]:
    """``(text, where it came from)`` for the demo."""
    folder = find_data_dir(data_dir)
    if folder is not None:
        essay = folder / "pg_essays" / "addiction.txt"
        if essay.is_file():
            return _excerpt(read_text(essay)), f"{essay} (first {EXCERPT_CHARS} characters)"
        wiki = folder / "wikitext2" / "wiki.test.raw"
        if wiki.is_file():
            return _excerpt(read_text(wiki)), f"{wiki} (first {EXCERPT_CHARS} characters)"
    return OWN_TEXT, "a paragraph written for tokensift (no evaluation data found)"


def run_demo(
    out: Console, err: Console, *, model: str, data_dir: Path | None, out_dir: Path, load: Callable[[], Any]
) -> None:
    from tokensift.inspection import inspect_text
    from tokensift.models import prefix_token_id
    from tokensift.report.html import inspection_html
    from tokensift.report.terminal import print_inspection

    text, source = pick_text(data_dir)
    out.print(Rule("tokensift demo · 1. inspect: which tokens surprise the model?"))
    out.print(f"text: {source}")
    loaded = load()
    result = inspect_text(
        text,
        loaded.model,
        loaded.tokenizer,
        model_name=loaded.name,
        prefix_id=prefix_token_id(loaded.tokenizer, loaded.spec),
    )
    print_inspection(out, result, top=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "inspect.html"
    page.write_text(inspection_html(result, title=f"tokensift inspect · {source}"), encoding="utf-8")
    out.print(
        f"\n[bold]What happened:[/bold] {loaded.name} read {len(result.tokens):,} tokens and gave each its "
        f"surprisal (−log p given the text before it); perplexity {result.perplexity:.2f}. "
        f"{sum(t.flagged for t in result.tokens)} tokens above the 95th-percentile surprisal are flagged "
        "(bold, underlined)."
    )
    out.print(f"[bold]HTML heat map:[/bold] {page.resolve()}")
    _compress_step(out, loaded, text, out_dir)
    from tokensift.kv.demo import kv_side_by_side

    kv_side_by_side(out, loaded, text)
    _vision_step(out, err, out_dir)


def _compress_step(out: Console, loaded: Any, text: str, out_dir: Path) -> None:
    """Step 2: the same text compressed to half its tokens with LLMLingua (exact budget, whole words)."""
    from tokensift.text.api import Compressor
    from tokensift.text.html import compression_html

    out.print(Rule("tokensift demo · 2. compress: the same text, half of it kept (llmlingua, keep 0.5)"))
    compressor = Compressor("llmlingua", model=loaded)
    result = compressor.compress(compressor.prepare(text), keep=0.5)
    out.print(result.compressed, highlight=False, markup=False)
    page = out_dir / "compress.html"
    page.write_text(compression_html(result, title="tokensift compress · llmlingua · keep 0.5"), encoding="utf-8")
    out.print(
        f"\n[bold]What happened:[/bold] {result.tokens_before:,} → {result.tokens_after:,} tokens "
        f"on {result.tokenizer} "
        f"(budget {result.keep_tokens:,}, kept {result.kept_fraction:.3f}) in {result.seconds['total']:.1f} s; "
        "words are kept or dropped whole; code, URLs and <keep> regions are always kept."
    )
    out.print(f"[bold]HTML (kept and dropped words):[/bold] {page.resolve()}")


def _vision_step(out: Console, err: Console, out_dir: Path) -> None:
    """Step 4: a VLM's visual tokens pruned on a real photo (scikit-image's coffee cup) and on an easy-VQA image."""
    from tokensift.errors import ModelNotInstalledError
    from tokensift.models import load_model
    from tokensift.vision.images import overlay_html
    from tokensift.vision.qa import answer

    out.print(Rule("tokensift demo · 4. vision: a VLM sees a quarter of its visual tokens (visionzip, keep 0.25)"))
    try:
        from PIL import Image
        from skimage import data

        from tokensift.vision import data as easy_vqa

        with err.status("loading llava-smol …"):
            vlm = load_model("llava-smol")
        sample = easy_vqa.questions("test")[1]
    except (ImportError, ModelNotInstalledError) as exc:
        out.print(f"skipped: {exc} (install the vision extra: bash scripts/setup.sh)")
        return
    photo = Image.fromarray(data.coffee())
    shapes = Image.open(sample.image).convert("RGB")
    for name, image, question in (("photo", photo, "What is in the image?"), ("shapes", shapes, sample.text)):
        full = answer(vlm.model, vlm.processor, [image], [question], max_new_tokens=12)
        pruned = answer(vlm.model, vlm.processor, [image], [question], "visionzip", keep=0.25, max_new_tokens=12)
        kept = pruned.prepared
        page = out_dir / f"vision-{name}.html"
        facts = {
            "question": question,
            f"answer (all {pruned.prepared.visual_tokens} tokens)": full.answers[0],
            "answer (visionzip)": pruned.answers[0],
        }
        page.write_text(overlay_html(image, kept.status[0], kept.grid, facts), encoding="utf-8")
        out.print(
            f"[bold]{name}[/bold] · {question!r}: all {kept.visual_tokens} tokens → {full.answers[0]!r} "
            f"(prefill {full.prefill_seconds:.2f} s); {kept.kept[0]} kept, {int((kept.status[0] == 1).sum())} merged "
            f"→ {pruned.answers[0]!r} (prefill {pruned.prefill_seconds:.2f} s) · {page.resolve()}"
        )
    out.print(
        "\n[bold]What happened:[/bold] the LLaVA (DINOv2-small + SmolLM2-135M, projector trained here on easy-VQA "
        "shapes only, so it names shapes and colours, not coffee cups) answered from all 256 visual tokens and from "
        "64 chosen by VisionZip ([CLS]-dominant patches + contextual merges); the pages show which patches were "
        "kept (gold), merged (blue) and pruned (dark)."
    )
