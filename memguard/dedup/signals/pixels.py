"""The exact-duplicate signal: a hash of decoded pixels."""

from __future__ import annotations

import hashlib

import numpy as np


def pixel_hash(rgb: np.ndarray) -> str:
    """Exact-duplicate hash of decoded pixels (so a PNG and a lossless WebP of one image agree)."""
    digest = hashlib.sha1(np.ascontiguousarray(rgb).tobytes(), usedforsecurity=False)
    digest.update(str(rgb.shape).encode())
    return digest.hexdigest()
