"""Stratification by how often an image was duplicated in the raw corpus (Carlini et al., Fig. 5)."""

from __future__ import annotations

import numpy as np

# Powers of two, as Carlini et al.'s Fig. 5 bins duplicate counts: a dose response up to 128 copies.
BUCKETS = (
    (1, 1, "1"),
    (2, 3, "2-3"),
    (4, 7, "4-7"),
    (8, 15, "8-15"),
    (16, 31, "16-31"),
    (32, 63, "32-63"),
    (64, 127, "64-127"),
    (128, 10**9, "128+"),
)


def bucket_of(count: int) -> str:
    for lo, hi, name in BUCKETS:
        if lo <= count <= hi:
            return name
    return "1"


def extraction_by_bucket(dup_counts: np.ndarray, extracted: np.ndarray) -> dict[str, dict[str, float]]:
    """Per bucket: reference images, distinct images extracted, and the rate."""
    out: dict[str, dict[str, float]] = {}
    names = np.array([bucket_of(int(c)) for c in dup_counts])
    for _, _, name in BUCKETS:
        mask = names == name
        total = int(mask.sum())
        hits = int((extracted & mask).sum())
        out[name] = {"images": total, "extracted": hits, "rate": round(hits / total, 4) if total else 0.0}
    return out
