"""Training data straight from webdataset shards: decoded once, resized, cached as a memmap.

Decoding a shard folder once into ``(N, H, W, 3)`` uint8 at the training resolution makes every epoch a
cheap index lookup and makes the sample order a pure function of (seed, epoch) — what exact resume needs.
Sampling weights come from the shards' ``sampling_weight`` (written by dedup's ``reweight`` policy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dedup.atomic import atomic_path, write_json
from dedup.cache import fingerprint
from dedup.readers import expand_urls, read_shards
from dedup.sample import Rejection
from dedup.validate import Invalid, decode_image

DATA_VERSION = 1


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # (N, H, W, 3) uint8
    captions: list[str]
    keys: list[str]
    weights: np.ndarray  # (N,) float64, relative sampling weights
    alt_captions: list[list[str]]  # other captions of the same image (MC mitigation)
    rejected: int  # units the reader or decoder refused (already recorded by dedup's manifest)

    def __len__(self) -> int:
        return len(self.keys)

    def pixels(self, index: np.ndarray) -> np.ndarray:
        """Batch as float32 NCHW in [-1, 1]."""
        return self.images[index].astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0


def square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize (Lanczos) — the training view of an image."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = Image.fromarray(rgb[top : top + side, left : left + side])
    if side != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def load_image_set(shards: str, resolution: int, cache_dir: str | Path) -> ImageSet:
    """Decode the shards at ``resolution`` (cached by the shards' size/mtime and the resolution)."""
    urls = [Path(u) for u in expand_urls(shards)]
    if not urls:
        raise FileNotFoundError(f"no shards match {shards!r}")
    key = fingerprint(
        "images", DATA_VERSION, [(str(u), u.stat().st_size, u.stat().st_mtime_ns) for u in urls], resolution
    )
    folder = Path(cache_dir) / "images" / key
    if not (folder / "index.json").exists():
        _decode_into(folder, [str(u) for u in urls], resolution)
    index = json.loads((folder / "index.json").read_text())
    n = len(index["keys"])
    images = np.load(folder / "images.npy", mmap_mode="r") if n else np.zeros((0, resolution, resolution, 3), np.uint8)
    return ImageSet(
        images,
        index["captions"],
        index["keys"],
        np.asarray(index["weights"], dtype=np.float64),
        index["alt_captions"],
        index["rejected"],
    )


def _decode_into(folder: Path, urls: list[str], resolution: int) -> None:
    arrays: list[np.ndarray] = []
    captions: list[str] = []
    keys: list[str] = []
    weights: list[float] = []
    alts: list[list[str]] = []
    rejected = 0
    for item in tqdm(read_shards(urls), desc="decode shards", unit="img", mininterval=1.0):
        if isinstance(item, Rejection):
            rejected += 1
            continue
        try:
            rgb = decode_image(item.image)
        except Invalid:
            rejected += 1
            continue
        arrays.append(square_resize(rgb, resolution))
        captions.append(item.caption)
        keys.append(item.key)
        weights.append(float(item.meta.get("sampling_weight", 1.0)))
        alts.append([str(c) for c in item.meta.get("captions", []) if c != item.caption])
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "images.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.stack(arrays) if arrays else np.zeros((0, resolution, resolution, 3), np.uint8))
    write_json(
        folder / "index.json",
        {"keys": keys, "captions": captions, "weights": weights, "alt_captions": alts, "rejected": rejected},
    )


class EpochSampler:
    """The stream of training samples is the concatenation of epochs, each a permutation (or, with
    non-uniform weights, a weighted draw with replacement of the same length) that is a pure function of
    (seed, epoch). Batch ``k`` is stream positions [k·B, (k+1)·B): resuming needs only the batch number."""

    def __init__(self, weights: np.ndarray, seed: int) -> None:
        if len(weights) == 0:
            raise ValueError("no training samples")
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("sampling weights must be finite, non-negative and not all zero")
        self.weights = weights / weights.sum()
        self.uniform = bool(np.allclose(weights, weights[0]))
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}

    def epoch(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, epoch])
            n = len(self.weights)
            order = rng.permutation(n) if self.uniform else rng.choice(n, size=n, replace=True, p=self.weights)
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = order
        return self._orders[epoch]

    def batch(self, number: int, batch_size: int) -> np.ndarray:
        positions = np.arange(number * batch_size, (number + 1) * batch_size)
        n = len(self.weights)
        epochs = positions // n
        out = np.empty(batch_size, dtype=np.int64)
        for e in np.unique(epochs):
            mask = epochs == e
            out[mask] = self.epoch(int(e))[positions[mask] % n]
        return out
