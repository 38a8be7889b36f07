"""Images at a model's resolution, straight from webdataset shards: decoded once, resized, cached as a
memmap. Training, the audit's reference and held-out sets all read images through this one module.

Decoding a shard folder once into ``(N, H, W, 3)`` uint8 at the training resolution makes every epoch a
cheap index lookup and makes the sample order a pure function of (seed, epoch) — what exact resume needs.
Sampling weights come from the shards' ``sampling_weight`` (written by dedup's ``reweight`` policy).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from memguard.common import storage
from memguard.common.atomic import atomic_path, write_json
from memguard.common.cache import Cache, entry_key
from memguard.corpus.discover import expand_urls
from memguard.corpus.readers import Item, read_shards
from memguard.corpus.sample import Rejection
from memguard.corpus.validate import Invalid, decode_image


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
    urls = expand_urls(shards)
    if not urls:
        raise FileNotFoundError(f"no shards match {storage.redact(shards)!r}")
    key = entry_key("images", [storage.stat_key(u) for u in urls], resolution)
    folder = Cache(Path(cache_dir)).get("images", key, lambda work: _decode_into(work, urls, resolution))
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


def decode_items(items: Iterable[Item], resolution: int, *, progress: bool = True) -> ImageSet:
    """Decode and resize every sample of ``items`` (the one decode loop of training, reference and held-out
    images); units the reader or the decoder refused are counted in ``rejected``."""
    arrays: list[np.ndarray] = []
    captions: list[str] = []
    keys: list[str] = []
    weights: list[float] = []
    alts: list[list[str]] = []
    rejected = 0
    for item in tqdm(items, desc="decode shards", unit="img", mininterval=1.0, disable=not progress):
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
    images = np.stack(arrays) if arrays else np.zeros((0, resolution, resolution, 3), np.uint8)
    return ImageSet(images, captions, keys, np.asarray(weights, dtype=np.float64), alts, rejected)


def _decode_into(folder: Path, urls: list[str], resolution: int) -> None:
    decoded = decode_items(read_shards(urls), resolution)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "images.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, decoded.images)
    index = {"keys": decoded.keys, "captions": decoded.captions, "weights": decoded.weights.tolist(),
             "alt_captions": decoded.alt_captions, "rejected": decoded.rejected}  # fmt: skip
    write_json(folder / "index.json", index)
