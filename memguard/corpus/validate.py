"""Per-sample validation: caption text and image bytes, each failure a Reason.

One decode function serves dedup, training and extraction, so that every stage sees the same pixels
(EXIF orientation applied, alpha composited on white, 16-bit scaled, CMYK converted).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from memguard.common.config import in_range
from memguard.corpus.sample import Reason

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Limits:
    """Bounds a sample must respect. ``max_pixels``, ``min_side`` and ``max_aspect`` are checked on the
    header, before any decoding; ``max_member_bytes`` on the tar header or file size, before any byte is read
    (a 1 MB .tar.gz can hold a 1 GiB member). ``max_aspect`` bounds what one image costs the embedders, which
    scale the short side up: an 8×3,000,000 PNG of a few KB would be a 64×24,000,000 working copy (4.6 GB)."""

    max_pixels: int = 40_000_000
    min_side: int = 8
    max_aspect: float = 32.0
    max_caption_bytes: int = 16_384
    max_member_bytes: int = 64 * 1024 * 1024  # per tar member or file, checked before its bytes are read

    def __post_init__(self) -> None:
        for name in ("max_pixels", "min_side", "max_caption_bytes", "max_member_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be >= 1, got {getattr(self, name)}")
        in_range("limits.max_aspect", self.max_aspect, lo=1.0)


class Invalid(Exception):
    """A validation failure that carries its reason code."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def validate_caption(raw: bytes, limits: Limits) -> str:
    """Return the caption as text, or raise Invalid with the reason it cannot be used."""
    if len(raw) > limits.max_caption_bytes:
        raise Invalid(Reason.CAPTION_TOO_LONG, f"{len(raw)} bytes > {limits.max_caption_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Invalid(Reason.CAPTION_NOT_UTF8, str(err)) from err
    text = text.removeprefix("\ufeff")
    if _CONTROL.search(text):
        raise Invalid(Reason.CAPTION_CONTROL_CHARS, repr(_CONTROL.search(text).group()))  # type: ignore[union-attr]
    text = text.strip()
    if not text:
        raise Invalid(Reason.EMPTY_CAPTION)
    return text


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any supported mode to RGB explicitly; transparency is composited on white."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return im.convert("RGB")
    raise Invalid(Reason.BAD_MODE, mode)


def decode_image(data: bytes, limits: Limits | None = None) -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array of shape (H, W, 3), or raise Invalid."""
    limits = limits or Limits()
    if not data:
        raise Invalid(Reason.UNDECODABLE, "zero bytes")
    try:
        with warnings.catch_warnings():
            # Pillow's bomb check warns at 89 MP and raises at twice that; ours runs first, on the header.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if im.format not in ALLOWED_FORMATS:
                raise Invalid(Reason.FORMAT_NOT_ALLOWED, str(im.format))
            width, height = im.size
            if width * height > limits.max_pixels:
                raise Invalid(Reason.TOO_LARGE, f"{width}x{height} > {limits.max_pixels} pixels")
            if min(width, height) < limits.min_side:
                raise Invalid(Reason.TOO_SMALL, f"{width}x{height}")
            if max(width, height) > limits.max_aspect * min(width, height):
                raise Invalid(Reason.EXTREME_ASPECT, f"{width}x{height}: aspect ratio over {limits.max_aspect:g}")
            frames = int(getattr(im, "n_frames", 1))
            if frames > 1:
                raise Invalid(Reason.ANIMATED, f"{frames} frames")
            im.load()
            oriented: Image.Image = ImageOps.exif_transpose(im) or im
            rgb = to_rgb(oriented)
    except Invalid:
        raise
    except Image.DecompressionBombError as err:
        raise Invalid(Reason.TOO_LARGE, str(err)) from err
    except UnidentifiedImageError as err:
        raise Invalid(Reason.UNDECODABLE, str(err)) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        text = str(err).lower()
        truncated = "truncated" in text or "end of file" in text or "broken data stream" in text
        raise Invalid(Reason.TRUNCATED if truncated else Reason.UNDECODABLE, f"{type(err).__name__}: {err}") from err
    except MemoryError:
        raise
    except Exception as err:
        # The per-sample boundary: Pillow's plugins raise more than OSError on malformed input (struct.error
        # from a broken EXIF block, TypeError from some WebP/TIFF mutations). Whatever the type, one bad
        # image becomes one rejected row, never a crashed run.
        raise Invalid(Reason.UNDECODABLE, f"{type(err).__name__}: {err}") from err
    return np.asarray(rgb, dtype=np.uint8)
