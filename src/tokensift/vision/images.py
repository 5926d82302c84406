"""Reading images and drawing what a method kept: corrupt or unsupported files are typed errors, never tracebacks."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from tokensift.errors import InputFileError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image(path: str | Path) -> Any:
    """The image at ``path`` as an RGB PIL image; :class:`InputFileError` when it is missing, not an image, or
    damaged."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.is_file():
        raise InputFileError(f"image {file} does not exist or is not a file")
    try:
        with Image.open(file) as image:
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError as exc:
        raise InputFileError(
            f"{file} is not an image PIL can read (supported: {', '.join(e.lstrip('.') for e in EXTENSIONS)})"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or damaged data
        raise InputFileError(f"{file} is damaged or truncated: {exc}") from exc


def overlay(image: Any, status: Any, grid: tuple[int, int], size: int = 448) -> Any:
    """``image`` resized to ``size`` with each patch shown as kept (clear), merged (blue) or pruned (dark)."""
    from PIL import Image, ImageDraw

    base = image.convert("RGB").resize((size, size))
    shade = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    rows, cols = grid
    values = [int(v) for v in status.flatten().tolist()]
    for index, value in enumerate(values):
        r, c = divmod(index, cols)
        box = (c * size // cols, r * size // rows, (c + 1) * size // cols - 1, (r + 1) * size // rows - 1)
        if value == 1:
            draw.rectangle(box, fill=(40, 90, 255, 110), outline=(40, 90, 255, 200))
        elif value == 2:
            draw.rectangle(box, fill=(0, 0, 0, 170))
        else:
            draw.rectangle(box, outline=(255, 215, 0, 230))
    return Image.alpha_composite(base.convert("RGBA"), shade).convert("RGB")


def overlay_html(image: Any, status: Any, grid: tuple[int, int], facts: dict[str, Any]) -> str:
    """A self-contained page: the overlay, a legend and the facts (question, answer, tokens kept, times)."""
    buffer = io.BytesIO()
    overlay(image, status, grid).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    counts = [int((status == v).sum()) for v in (0, 1, 2)]
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tokensift vision</title>
<style>body{{font-family:sans-serif;margin:2em}} th{{text-align:left;padding-right:1em}}
.k{{border:2px solid gold}} .m{{background:rgba(40,90,255,.45)}} .p{{background:rgba(0,0,0,.7)}}
.sw{{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}}</style></head><body>
<h1>Visual tokens</h1>
<img src="data:image/png;base64,{data}" alt="patches kept, merged and pruned">
<p><span class="sw k"></span>kept {counts[0]} <span class="sw m"></span>merged {counts[1]}
<span class="sw p"></span>pruned {counts[2]}</p>
<table>{rows}</table></body></html>
"""
