"""A seeded duplication injector: turns a clean corpus into a LAION-like one with near-exact copies.

Each copy is a variant a scraper would really see: a JPEG re-encode, a crop of a few pixels resized
back, a small brightness shift, and a caption that differs in case, punctuation or one extra word.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from memguard.common.config import ConfigError

EXTRA_WORDS = ("emoji", "icon", "image", "picture", "clipart", "hd", "free", "png", "vector", "cute")


@dataclass(frozen=True)
class InjectionConfig:
    """How many images get copies and what the copies look like.

    fraction: share of (non-held-out) images that are duplicated.
    min_count/max_count: total occurrences of a duplicated image (original included), drawn from a
        discrete power law P(c) ∝ c^-tail_exponent on the powers of two in [min_count, max_count];
        with ``balanced``, each of those powers of two goes to the same number of images (±1), in random
        order — a dose-response design with every copy count populated.
    design_counts / design_images: an explicit design instead of the above (both set, of equal length):
        ``design_images[i]`` images get ``design_counts[i]`` occurrences each (``fraction``, the count
        range and the power law are then unused).
    p_*: probability that each transform applies to a copy (independently).
    """

    fraction: float = 0.05
    min_count: int = 2
    max_count: int = 64
    tail_exponent: float = 0.7
    balanced: bool = False
    design_counts: tuple[int, ...] = ()
    design_images: tuple[int, ...] = ()
    p_jpeg: float = 0.5
    p_crop: float = 0.5
    p_brightness: float = 0.5
    p_caption: float = 0.5
    max_crop_fraction: float = 0.05  # of the image side: 2 px at 32 px, 1 px at 16 px (at least 1)
    max_brightness: float = 0.04
    jpeg_quality: tuple[int, int] = (75, 95)

    def __post_init__(self) -> None:
        if len(self.design_counts) != len(self.design_images):
            raise ValueError(
                f"injection.design_counts and design_images must have equal lengths, got "
                f"{len(self.design_counts)} and {len(self.design_images)}"
            )
        if any(c < 2 for c in self.design_counts) or any(i < 1 for i in self.design_images):
            raise ValueError("injection.design_counts must be >= 2 and design_images >= 1")

    def duplicated(self, candidates: int) -> int:
        """How many of ``candidates`` images get copies."""
        if self.design_counts:
            if sum(self.design_images) > candidates:  # known only once the corpus is drawn: a config error
                raise ConfigError(
                    f"corpus.twemoji.injection.design_images asks for {sum(self.design_images)} images, "
                    f"{candidates} exist"
                )
            return sum(self.design_images)
        return round(self.fraction * candidates)


def draw_counts(n: int, config: InjectionConfig, rng: np.random.Generator) -> np.ndarray:
    """Occurrence counts (≥ 2) for ``n`` duplicated images: the explicit design if set, else
    heavy-tailed (or balanced) over powers of two."""
    if config.design_counts:
        return rng.permutation(np.repeat(np.array(config.design_counts), np.array(config.design_images)))
    choices = [c for c in (2**k for k in range(1, 12)) if config.min_count <= c <= config.max_count]
    if not choices:
        raise ConfigError(
            f"corpus.twemoji.injection: no power of two in [min_count, max_count] = "
            f"[{config.min_count}, {config.max_count}]"
        )
    if config.balanced:
        return rng.permutation(np.resize(np.array(choices), n))
    weights = np.array(choices, dtype=float) ** -config.tail_exponent
    return rng.choice(np.array(choices), size=n, p=weights / weights.sum())


def vary_caption(caption: str, rng: np.random.Generator) -> tuple[str, str]:
    """A caption variant and the name of the change."""
    kind = str(rng.choice(["upper", "title", "punct", "extra_word"]))
    if kind == "upper":
        return caption.upper(), kind
    if kind == "title":
        return caption.title(), kind
    if kind == "punct":
        return caption + str(rng.choice(["!", ".", "!!", " :)"])), kind
    word = str(rng.choice(EXTRA_WORDS))
    return (f"{word} {caption}" if rng.random() < 0.5 else f"{caption} {word}"), kind


def make_copy(
    rgb: np.ndarray, caption: str, *, config: InjectionConfig, rng: np.random.Generator
) -> tuple[bytes, str, str, dict[str, object]]:
    """One near-exact copy: (encoded bytes, extension, caption, transforms applied)."""
    image = Image.fromarray(rgb)
    applied: dict[str, object] = {}
    if rng.random() < config.p_crop:
        width, height = image.size
        max_crop = max(1, round(config.max_crop_fraction * min(width, height)))
        left, top, right, bottom = (int(v) for v in rng.integers(0, max_crop + 1, size=4))
        if left + top + right + bottom > 0:
            image = image.crop((left, top, width - right, height - bottom)).resize(
                (width, height), Image.Resampling.BICUBIC
            )
            applied["crop"] = [left, top, right, bottom]
    if rng.random() < config.p_brightness:
        factor = 1.0 + float(rng.uniform(-config.max_brightness, config.max_brightness))
        arr = np.asarray(image, dtype=np.float32) * factor
        image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        applied["brightness"] = round(factor, 4)
    out = io.BytesIO()
    if rng.random() < config.p_jpeg:
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        image.save(out, format="JPEG", quality=quality)
        applied["jpeg"] = quality
        ext = "jpg"
    else:
        image.save(out, format="PNG", optimize=False)
        ext = "png"
    if rng.random() < config.p_caption:
        caption, change = vary_caption(caption, rng)
        applied["caption"] = change
    return out.getvalue(), ext, caption, applied
