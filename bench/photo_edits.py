"""The edits reposted photographs carry, each family with a randomised strength: what
``bench/dedup_photos.py`` measures recall on.

Families (``FAMILIES``): JPEG (q 25–80), resize (30–80% of the side), crops to 60–90% of the area
(central and off-centre, kept at the cropped size or resized back), borders of 5–25% in any colour (all
sides, letterbox or pillarbox), rotations of 2–15° either way (corners filled or cropped away), flips,
greyscale, colour jitter (brightness, contrast, saturation, hue), burned-in text (a caption band or lines
over the picture), a logo (a shape with a word), the picture pasted into a larger canvas at 40–90% of its
area (a screenshot with title bar and side panel, or a collage among blocks of other content), and
``chain``: two or three of the other families in a row.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]

WORDS = ("sale", "breaking", "wow", "the best view", "follow us", "new", "photo of the day", "© stock images",
         "download now", "free", "amazing", "look at this", "#travel", "share if you agree")  # fmt: skip


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return (int(rng.integers(256)), int(rng.integers(256)), int(rng.integers(256)))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(rng.integers(25, 81)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def resize(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    scale = rng.uniform(0.3, 0.8)
    w, h = image.size
    return image.resize((max(16, round(w * scale)), max(16, round(h * scale))), Image.Resampling.BICUBIC)


def _crop(image: Image.Image, rng: np.random.Generator, *, central: bool) -> Image.Image:
    w, h = image.size
    area = rng.uniform(0.6, 0.9)
    aspect = rng.uniform(0.8, 1.25)
    cw = min(w, round(w * np.sqrt(area * aspect)))
    ch = min(h, round(h * area * w / max(cw, 1)))
    x = (w - cw) // 2 if central else int(rng.integers(0, w - cw + 1))
    y = (h - ch) // 2 if central else int(rng.integers(0, h - ch + 1))
    out = image.crop((x, y, x + cw, y + ch))
    return out.resize((w, h), Image.Resampling.BICUBIC) if rng.random() < 0.5 else out


def crop_central(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _crop(image, rng, central=True)


def crop_offcentre(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _crop(image, rng, central=False)


def border(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    pad = rng.uniform(0.05, 0.25)
    style = rng.integers(3)  # all sides, letterbox (top and bottom), pillarbox (left and right)
    px = round(w * pad) if style != 1 else 0
    py = round(h * pad) if style != 2 else 0
    canvas = Image.new("RGB", (w + 2 * px, h + 2 * py), _colour(rng))
    canvas.paste(image, (px, py))
    return canvas


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = rng.uniform(2, 15) * rng.choice((-1, 1))
    if rng.random() < 0.5:
        return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=_colour(rng))
    # Rotated and cropped to the largest centred rectangle without fill (what editors' straighten does).
    w, h = image.size
    turned = image.rotate(angle, resample=Image.Resampling.BICUBIC)
    a = np.radians(abs(angle))
    scale = 1 / (np.cos(a) + np.sin(a) * max(w, h) / min(w, h))
    cw, ch = round(w * scale), round(h * scale)
    return turned.crop(((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2))


def flip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.mirror(image)


def grey(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.5))
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(-12, 13))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def text(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    size = round(h * rng.uniform(0.06, 0.12))
    words = " ".join(rng.choice(WORDS, 2))
    if rng.random() < 0.5:  # a caption band above or below, as meme and news reposts add
        band = round(size * 1.8)
        canvas = Image.new("RGB", (w, h + band), _colour(rng))
        top = rng.random() < 0.5
        canvas.paste(image, (0, band if top else 0))
        ImageDraw.Draw(canvas).text((size // 2, (0 if top else h) + band // 5), words, fill=_colour(rng), font=_font(size))
        return canvas
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        xy = (int(rng.integers(0, w // 2)), int(rng.integers(0, h - size)))
        draw.text(xy, " ".join(rng.choice(WORDS, 2)), fill=_colour(rng), font=_font(size), stroke_width=1,
                  stroke_fill=_colour(rng))  # fmt: skip
    return image


def logo(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = image.copy()
    w, h = image.size
    side = round(min(w, h) * rng.uniform(0.12, 0.25))
    x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
    draw = ImageDraw.Draw(image)
    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
    shape((x, y, x + side, y + side), fill=_colour(rng), outline=_colour(rng), width=2)
    draw.text((x + side // 8, y + side // 3), str(rng.choice(("TV", "NEWS", "HD", "pix", "24"))), fill=_colour(rng),
              font=_font(side // 3))  # fmt: skip
    return image


def paste(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Into a larger canvas, the picture taking 40–90% of its area: a screenshot (title bar, side
    panel, lines of text) or a collage (blocks of flat colour and noise around it)."""
    w, h = image.size
    share = rng.uniform(0.4, 0.9)
    cw, ch = round(w / np.sqrt(share)), round(h / np.sqrt(share))
    canvas = Image.new("RGB", (cw, ch), _colour(rng) if rng.random() < 0.5 else (240, 240, 240))
    draw = ImageDraw.Draw(canvas)
    x, y = int(rng.integers(0, cw - w + 1)), int(rng.integers(0, ch - h + 1))
    if rng.random() < 0.5:  # screenshot
        draw.rectangle((0, 0, cw, max(6, ch // 14)), fill=_colour(rng))
        for line in range(ch // 14 + 4, ch, max(8, ch // 12)):
            draw.text((4, line), str(rng.choice(WORDS)), fill=(30, 30, 30), font=_font(max(8, ch // 20)))
    else:  # collage
        for _ in range(6):
            bx, by = int(rng.integers(0, cw)), int(rng.integers(0, ch))
            block = rng.integers(0, 256, (max(4, ch // 4), max(4, cw // 4), 3), dtype=np.uint8)
            canvas.paste(Image.fromarray(block) if rng.random() < 0.5 else Image.new("RGB", block.shape[1::-1], _colour(rng)),
                         (bx, by))  # fmt: skip
    canvas.paste(image, (x, y))
    return canvas


SINGLE: dict[str, Edit] = {
    "jpeg": jpeg, "resize": resize, "crop_central": crop_central, "crop_offcentre": crop_offcentre,
    "border": border, "rotate": rotate, "flip": flip, "grey": grey, "jitter": jitter, "text": text,
    "logo": logo, "paste": paste,
}  # fmt: skip
FAMILIES = (*SINGLE, "chain")


def apply_edit(image: Image.Image, family: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """``image`` under one edit of ``family`` (strength drawn from ``rng``) and the edit's description."""
    if family != "chain":
        return SINGLE[family](image, rng).convert("RGB"), family
    names = [str(n) for n in rng.choice(list(SINGLE), int(rng.integers(2, 4)), replace=False)]
    for name in names:
        image = SINGLE[name](image, rng).convert("RGB")
    return image, "+".join(names)
