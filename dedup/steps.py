"""Step functions shared by the map stage (``dedup.shardmap``) and the global steps of the pipeline
(``dedup.pipeline``): the pixel hash, caption signatures, neighbour pairs."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedup.signals.minhash import MinHasher, MinHashParams
from dedup.signals.neighbors import IndexParams, finite_rows, neighbor_pairs
from dedup.signals.views import SINGLE, ViewLayout


def pixel_hash(rgb: np.ndarray) -> str:
    """Exact-duplicate hash of decoded pixels (so a PNG and a lossless WebP of one image agree)."""
    digest = hashlib.sha1(np.ascontiguousarray(rgb).tobytes(), usedforsecurity=False)
    digest.update(str(rgb.shape).encode())
    return digest.hexdigest()


MIN_CAPTION_CHARS = 3  # shorter normalised captions ("a", "") never enter the caption index


def long_enough(captions: list[str]) -> np.ndarray:
    """Normalised captions that may join a caption signal at all (MinHash or embeddings)."""
    return np.array([len(c) >= MIN_CAPTION_CHARS for c in captions], dtype=bool)


def compute_signatures(captions: list[str], params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """(signatures, usable): captions with no shingles or under MIN_CAPTION_CHARS are not usable."""
    signatures, empty = MinHasher(params).signatures(captions)
    return signatures, ~empty & long_enough(captions)


def compute_neighbor_pairs(
    embeddings: np.ndarray, params: IndexParams, layout: ViewLayout = SINGLE
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour pairs among finite embeddings (indices refer to the full embedding array)."""
    mask = finite_rows(embeddings)
    if mask.all():  # the usual case: no copy of the corpus's largest array
        return neighbor_pairs(embeddings, params, layout)
    finite = np.flatnonzero(mask)
    pairs, sims = neighbor_pairs(embeddings[finite], params, layout)
    return finite[pairs] if len(pairs) else pairs, sims


def sorted_group_ids(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """For each value, the rank of its value among the distinct values (``np.unique``'s inverse), sorted
    by Arrow without converting 10^6+ strings to a NumPy unicode array (160 bytes per 40-char hash)."""
    n = len(values)
    if not n:
        return np.zeros(0, np.int64)
    order = pc.sort_indices(values).to_numpy()
    ordered = values.take(pa.array(order))
    changes = pc.not_equal(ordered.slice(1), ordered.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    ranks = np.concatenate([[0], np.cumsum(changes)])
    ids = np.empty(n, np.int64)
    ids[order] = ranks
    return ids
