"""CopyGuard: tag generations that are near-copies of training images, for any pipeline.

An embedder of dedup's (the default ``pixels`` embedder unless one is passed in) and a faiss index of
the same kind dedup searches answer "is this generation a copy?"; the index is built here over the
training images given, not read from a dedup run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from dedup.signals.embed import Embedder, EmbedderParams, make_embedder
from dedup.signals.neighbors import IndexParams, build_index, finite_rows


@dataclass(frozen=True)
class CopyVerdict:
    is_copy: bool
    training_key: str
    similarity: float


class CopyGuard:
    """Index training images once; ``check`` tells for each generated image whether it is a near-copy."""

    def __init__(
        self,
        training_images: Sequence[np.ndarray],
        training_keys: Sequence[str],
        threshold: float = 0.98,
        embedder: Embedder | None = None,
    ) -> None:
        self.embedder = embedder or make_embedder(EmbedderParams())
        vectors = self.embedder.embed(list(training_images))
        if not finite_rows(vectors).all():
            raise ValueError("a training image has a non-finite embedding")
        self.keys = list(training_keys)
        self.threshold = threshold
        self.index = build_index(vectors, IndexParams(kind="flat"))

    def check(self, images: Sequence[np.ndarray]) -> list[CopyVerdict]:
        vectors = self.embedder.embed(list(images))
        sims, idx = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        return [
            CopyVerdict(bool(s >= self.threshold), self.keys[int(i)], float(s))
            for s, i in zip(sims[:, 0], idx[:, 0], strict=True)
        ]

    def wrap(self, pipeline: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a diffusers pipeline call: its output gains ``copy_verdicts`` (one per image)."""

        def guarded(*args: Any, **kwargs: Any) -> Any:
            output = pipeline(*args, **kwargs)
            images = [
                np.asarray(im.convert("RGB")) if isinstance(im, Image.Image) else _to_uint8(im) for im in output.images
            ]
            output.copy_verdicts = self.check(images)
            return output

        return guarded


def _to_uint8(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    return arr if arr.dtype == np.uint8 else np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)
