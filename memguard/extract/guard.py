"""CopyGuard: tag generations that are near-copies of training images, for any pipeline.

An embedder of dedup's (its default, ``robust``, unless one is passed in) and a search with dedup's
similarity (the best allowed pair of views for multi-view embedders: memguard/dedup/signals/views.py) —
exhaustive below ``GuardIndexParams.exact_below`` training vectors, faiss indices with exact rescoring
above (memguard/extract/guard_index.py) — answer "is this generation a copy?"; with local features
(``local``, dedup's default: on), each generation's candidates are verified as dedup verifies its pairs,
so a generation that repeats part of a training photograph (cropped, rotated, in a larger frame) counts. The training images' vectors are computed here from the images, or
(``CopyGuard.from_dedup``) read from a dedup run's cache, with the embedder that run was configured with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from memguard.common.config import build
from memguard.common.mapped import load_mapped
from memguard.corpus.validate import Invalid, to_rgb
from memguard.dedup.signals.embed import Embedder, EmbedderParams, make_embedder, view_layout
from memguard.dedup.signals.local import Verifier
from memguard.dedup.signals.local_features import FeatureBank, local_features
from memguard.dedup.signals.local_params import LocalParams
from memguard.dedup.signals.neighbors import finite_rows
from memguard.extract.guard_index import GuardIndexParams, TrainingIndex


@dataclass(frozen=True)
class CopyVerdict:
    is_copy: bool
    training_key: str
    similarity: float


def as_rgb_uint8(image: Any, where: str = "image") -> np.ndarray:
    """One image as diffusers pipelines return them — a PIL image, an HWC or CHW array, or a torch tensor;
    uint8, or floats in [0, 1] (``output_type="np"``) — as an (H, W, 3) uint8 array. Grayscale becomes RGB,
    alpha is composited on white. Anything else is a clear ValueError, never a silent guess."""
    if isinstance(image, Image.Image):  # the decoder's own conversion, so a PIL image means what it means there
        if 0 in image.size:
            raise ValueError(f"{where}: an empty image ({image.width}x{image.height} pixels)")
        try:
            return np.asarray(to_rgb(image), dtype=np.uint8)
        except Invalid as err:
            raise ValueError(f"{where}: {err}") from err
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW → HWC
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{where}: expected an (H, W[, 1|3|4]) or (1|3|4, H, W) image, got shape {arr.shape}")
    if 0 in arr.shape[:2]:
        raise ValueError(f"{where}: an empty image (shape {arr.shape})")
    if arr.dtype == np.uint8:
        pixels = arr.astype(np.float64) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        pixels = arr.astype(np.float64)
        if not np.isfinite(pixels).all():
            raise ValueError(f"{where}: contains NaN or Inf")
        if pixels.min() < 0.0 or pixels.max() > 1.0:
            raise ValueError(
                f"{where}: float pixels must be in [0, 1] (diffusers' output_type='np'); got "
                f"[{pixels.min():.3g}, {pixels.max():.3g}] — map [-1, 1] outputs with (x + 1) / 2 first"
            )
    else:
        raise ValueError(f"{where}: unsupported dtype {arr.dtype} (uint8 or float in [0, 1])")
    if pixels.shape[-1] == 4:
        alpha = pixels[..., 3:]
        pixels = pixels[..., :3] * alpha + (1.0 - alpha)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def _checked(threshold: float) -> float:
    if not -1.0 <= float(threshold) <= 1.0:  # also refuses NaN
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    return float(threshold)


class CopyGuard:
    """Index training images once; ``check`` tells for each generated image whether it is a near-copy."""

    local: LocalParams | None  # None: the global similarity alone
    bank: FeatureBank | None  # the training images' local features (verification needs one with keypoints)

    def __init__(
        self,
        training_images: Sequence[Any],
        training_keys: Sequence[str],
        threshold: float = 0.975,
        *,
        embedder: Embedder | None = None,
        index: GuardIndexParams | None = None,
        local: LocalParams | None = None,
    ) -> None:
        threshold = _checked(threshold)
        if len(training_images) != len(training_keys):
            raise ValueError(f"{len(training_images)} training images but {len(training_keys)} keys")
        if not len(training_images):
            raise ValueError("no training images to guard")
        embedder = embedder or make_embedder(EmbedderParams())
        images = [as_rgb_uint8(im, f"training image {i}") for i, im in enumerate(training_images)]
        vectors = embedder.embed(images)
        if not finite_rows(vectors).all():
            raise ValueError("the embedder returned a non-finite vector for a training image")
        local = LocalParams() if local is None else local
        bank = FeatureBank(local_features(images, local.features), local.features) if local.enabled else None
        self._set(vectors, list(training_keys), threshold, embedder=embedder, index=index)
        self.local, self.bank = (local if bank is not None else None), bank

    def _set(
        self,
        vectors: np.ndarray,
        keys: list[str],
        threshold: float,
        *,
        embedder: Embedder,
        index: GuardIndexParams | None,
    ) -> None:
        self.embedder, self.keys, self.threshold, self.vectors = embedder, keys, threshold, vectors
        self.layout = view_layout(embedder.name)
        self.index = TrainingIndex(vectors, self.layout, index)
        self.local, self.bank = None, None

    @classmethod
    def from_dedup(
        cls,
        output: str | Path,
        *,
        threshold: float = 0.975,
        kept_only: bool = True,
        index: GuardIndexParams | None = None,
    ) -> CopyGuard:
        """A guard over the samples of a local dedup run's ``output`` folder — its kept samples (what
        training reads), or every valid sample — with the vectors that run computed (read from its cache,
        memory-mapped) and the embedder it was configured with. The cache entry must still exist."""
        threshold = _checked(threshold)
        out = Path(output)
        stats = json.loads((out / "stats.json").read_text())
        entry = Path(stats.get("embeddings_entry", ""))
        if not (entry / "embeddings.npy").exists():
            raise FileNotFoundError(f"{out}: the run's embeddings are not in its cache any more ({entry}); rerun dedup")
        units = pq.read_table(entry / "units.parquet", columns=["key", "source", "sample_index"])
        manifest = pq.read_table(out / "manifest.parquet", columns=["key", "source", "status"])
        if units.select(["key", "source"]) != manifest.select(["key", "source"]):
            raise ValueError(f"{out}: the manifest does not match the cached embeddings' units")
        sample = units.column("sample_index").to_numpy()
        status = manifest.column("status").to_numpy(zero_copy_only=False)
        rows = np.flatnonzero((sample >= 0) & ((status == "kept") if kept_only else True))
        if not len(rows):
            raise ValueError(f"{out}: no {'kept' if kept_only else 'valid'} samples to guard")
        vectors = load_mapped(entry / "embeddings.npy")[sample[rows]]
        keys = units.column("key").to_numpy(zero_copy_only=False)[rows].astype(str).tolist()
        guard = cls.__new__(cls)
        embedder = make_embedder(EmbedderParams(**stats["params"]["embedder"]))
        guard._set(vectors, keys, threshold, embedder=embedder, index=index)
        local = build(LocalParams, stats["params"].get("local"), "local")  # a run before local features: the default
        if local.enabled and "local" in stats["params"] and (entry / "features.npy").exists():
            feature_rows = np.load(entry / "feature_rows.npy", allow_pickle=False)[sample[rows]]
            guard.local = local
            guard.bank = FeatureBank(load_mapped(entry / "features.npy"), local.features, rows=feature_rows)
        return guard

    def check(self, images: Sequence[Any]) -> list[CopyVerdict]:
        arrays = [as_rgb_uint8(im, f"image {i}") for i, im in enumerate(images)]
        if not arrays:
            return []
        vectors = self.embedder.embed(arrays)
        bad = np.flatnonzero(~finite_rows(vectors))
        if len(bad):
            raise ValueError(f"the embedder returned a non-finite vector for image(s) {bad.tolist()[:5]}")
        bank = self.bank
        if self.local is not None and bank is not None and (bank.counts() >= self.local.min_inliers).any():
            sims, idx = self._verified_best(arrays, np.asarray(vectors, np.float32))
        else:
            sims, idx = self.index.best(np.asarray(vectors, np.float32))
        return [
            CopyVerdict(bool(s >= self.threshold), self.keys[int(i)], float(s)) for s, i in zip(sims, idx, strict=True)
        ]

    def _verified_best(self, arrays: list[np.ndarray], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each generation's best training match after local verification of its candidates (dedup's
        combined similarity: memguard/dedup/signals/local.py)."""
        assert self.local is not None and self.bank is not None
        q_rows, cols, sims = self.index.scored_candidates(vectors)
        verifier = Verifier(local_features(arrays, self.local.features), self.local, other=self.bank)
        combined = verifier.combined(sims, q_rows, cols)
        best = np.full(len(arrays), -np.inf, np.float32)
        where = np.zeros(len(arrays), np.int64)
        order = np.lexsort((cols, -combined, q_rows))  # by query, the most similar first, ties to the lower row
        first = order[np.unique(q_rows[order], return_index=True)[1]]
        best[q_rows[first]], where[q_rows[first]] = combined[first], cols[first]
        return best, where

    def wrap(self, pipeline: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a diffusers pipeline call: its output gains ``copy_verdicts`` (one per image)."""

        def guarded(*args: Any, **kwargs: Any) -> Any:
            output = pipeline(*args, **kwargs)
            output.copy_verdicts = self.check(list(output.images))
            return output

        return guarded
