"""The real-world edits that scraped copies carry (Webster 2023; Somepalli 2023), with fixed parameters:
what ``bench/dedup_transforms.py`` measures recall on, and the tests check the default embedder against.

``TRANSFORMS`` are the nine of the decisions issue; ``HELD_OUT`` are edits of the same families at other
strengths, never used to choose the ``robust`` embedder's views, to show whether it generalises.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

TRANSFORMS = ("jpeg60", "resize60", "rotate7", "grey", "jitter", "watermark", "crop80", "flip", "letterbox15")
HELD_OUT = ("rotate3", "rotate11", "crop90", "crop70", "pillarbox10", "caption_centre")


def edit(rgb: np.ndarray, name: str, rng: np.random.Generator) -> Image.Image:
    """``rgb`` under the edit ``name`` (one of TRANSFORMS or HELD_OUT); ``rng`` draws the jitter."""
    image = Image.fromarray(rgb)
    w, h = image.size
    if name == "jpeg60":
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=60)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if name == "resize60":
        return image.resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.BICUBIC)
    if name.startswith("rotate"):
        return image.rotate(float(name[6:]), resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    if name == "grey":
        return ImageOps.grayscale(image).convert("RGB")
    if name == "jitter":
        image = ImageEnhance.Brightness(image).enhance(1 + rng.uniform(-0.2, 0.2))
        image = ImageEnhance.Contrast(image).enhance(1 + rng.uniform(-0.2, 0.2))
        return ImageEnhance.Color(image).enhance(1 + rng.uniform(-0.3, 0.3))
    if name == "watermark":
        draw = ImageDraw.Draw(image)
        draw.text((2, h - 14), "© stock", fill=(40, 40, 40))
        return image
    if name.startswith("crop"):
        keep = int(name[4:]) / 100
        dx, dy = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
        return image.crop((dx, dy, w - dx, h - dy)).resize((w, h), Image.Resampling.BICUBIC)
    if name == "flip":
        return ImageOps.mirror(image)
    if name.startswith("letterbox"):
        pad = round(h * int(name[9:]) / 100)
        canvas = Image.new("RGB", (w, h + 2 * pad), (0, 0, 0))
        canvas.paste(image, (0, pad))
        return canvas
    if name.startswith("pillarbox"):
        pad = round(w * int(name[9:]) / 100)
        canvas = Image.new("RGB", (w + 2 * pad, h), (255, 255, 255))
        canvas.paste(image, (pad, 0))
        return canvas
    if name == "caption_centre":
        draw = ImageDraw.Draw(image)
        draw.text((w // 2 - 20, h // 2 - 6), "SAMPLE", fill=(255, 255, 255))
        return image
    raise ValueError(name)
