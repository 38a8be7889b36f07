"""Scores of index pairs over per-sample arrays, a block of pairs at a time: gathering both sides of every
pair at once would copy the corpus's largest arrays (embeddings, signatures) in full."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BLOCK = 65_536


def over_pairs(
    score: Callable[[np.ndarray, np.ndarray], np.ndarray], left: np.ndarray, right: np.ndarray
) -> np.ndarray:
    """``score(left[block], right[block])`` for consecutive blocks of the pairs, as one float32 array."""
    out = np.empty(len(left), np.float32)
    for start in range(0, len(left), BLOCK):
        out[start : start + BLOCK] = score(left[start : start + BLOCK], right[start : start + BLOCK])
    return out


def pair_cosines(vectors: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``vectors[left[i]] · vectors[right[i]]`` (cosines of unit rows)."""
    return over_pairs(lambda a, b: np.einsum("ij,ij->i", vectors[a], vectors[b]), left, right)


def pair_agreement(signatures: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Fraction of equal MinHash values of each pair: the estimated Jaccard similarity."""
    return over_pairs(lambda a, b: (signatures[a] == signatures[b]).mean(axis=1), left, right)
