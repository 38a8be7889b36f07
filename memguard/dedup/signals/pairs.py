"""Scores of index pairs over per-sample arrays, a block of pairs at a time: gathering both sides of every
pair at once would copy the corpus's largest arrays (embeddings, signatures) in full."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from memguard.common.mapped import release, rows_of
from memguard.dedup.signals.views import SINGLE, ViewLayout, pair_similarity

BLOCK = 65_536


def pair_codes(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """One int64 per unordered pair of indices below ``n`` (exact up to ~3·10^9 samples): 8 bytes a pair,
    and a 1-D sort orders the pairs as (min, max) lexicographically."""
    return np.minimum(a, b).astype(np.int64) * np.int64(n) + np.maximum(a, b)


def code_pairs(codes: np.ndarray, n: int) -> np.ndarray:
    """The (i, j), i < j, rows of ``pair_codes``."""
    return np.stack([codes // np.int64(n), codes % np.int64(n)], axis=1)


@dataclass(frozen=True)
class PairTable:
    """Values of a set of unordered index pairs, looked up by pair: a similarity a candidate step
    computed for its pairs (local verification) overrides the one computed again for the same pair."""

    codes: np.ndarray  # sorted ``pair_codes``
    values: np.ndarray
    n: int

    @classmethod
    def of(cls, pairs: np.ndarray, values: np.ndarray, n: int) -> PairTable:
        codes = pair_codes(pairs[:, 0], pairs[:, 1], n) if len(pairs) else np.zeros(0, np.int64)
        order = np.argsort(codes, kind="stable")
        return cls(codes[order], np.asarray(values, np.float32)[order], n)

    def override(self, left: np.ndarray, right: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``values`` (one per pair (left[p], right[p])) with the table's value wherever it has the pair."""
        return self.lookup(left, right, values)[1]

    def lookup(self, left: np.ndarray, right: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which pairs the table holds, and ``values`` with the table's value for those."""
        out = np.array(values, np.float32, copy=True)
        if not len(self.codes) or not len(left):
            return np.zeros(len(out), bool), out
        codes = pair_codes(np.asarray(left), np.asarray(right), self.n)
        pos = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        hit = self.codes[pos] == codes
        out[hit] = self.values[pos[hit]]
        return hit, out


def over_pairs(
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    left: np.ndarray,
    right: np.ndarray,
    *,
    source: np.ndarray | None,
    block: int = BLOCK,
) -> np.ndarray:
    """``score(left[block], right[block])`` for consecutive blocks of the pairs, as one float32 array;
    ``source`` (the array ``score`` reads through its mapping, if any) gives its mapped pages back after
    each block."""
    if isinstance(source, np.memmap):
        # Each scattered row read through a mapping maps the page-cache folio around it (up to 2 MB),
        # so a block of 65,536 random pairs mapped all 2 GB of 10^6 embeddings before its release.
        block = min(block, MAPPED_BLOCK)
    out = np.empty(len(left), np.float32)
    for start in range(0, len(left), block):
        out[start : start + block] = score(left[start : start + block], right[start : start + block])
        if source is not None:
            release(source)
    return out


MAPPED_BLOCK = 2048  # pairs per block over a memory-mapped source between two releases
BLOCK_BYTES = 64 << 20  # rows gathered per side and block of pairs (64 MiB: 65,536 rows of 1 KiB)


def pair_cosines(
    vectors: np.ndarray, left: np.ndarray, right: np.ndarray, *, layout: ViewLayout = SINGLE
) -> np.ndarray:
    """``vectors[left[i]] · vectors[right[i]]`` (cosines of unit rows); for multi-view rows, the best
    allowed pair of views (memguard/dedup/signals/views.py)."""
    block = max(1024, BLOCK_BYTES // max(1, vectors.shape[1] * vectors.itemsize))  # wide multi-view rows: fewer
    # rows_of: the rows are read from a mapped array's file, not through its mapping (nothing to release).
    return over_pairs(
        lambda a, b: pair_similarity(rows_of(vectors, a), rows_of(vectors, b), layout), left, right, source=None,
        block=block,
    )  # fmt: skip


def pair_agreement(signatures: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Fraction of equal MinHash values of each pair: the estimated Jaccard similarity (datasketch's
    ``MinHash.jaccard``). Counted by a compiled loop: LSH verifies 10^7+ candidate pairs at 10^6 samples,
    and gathering both rows of every pair into temporaries first moved ~1 KiB per pair through memory."""
    if not len(left):
        return np.zeros(0, np.float32)
    rows = np.asarray(signatures)
    width = rows.shape[1]

    def agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        counts = np.empty(len(a), np.int64)
        _equal_counts(rows, a.astype(np.int64, copy=False), b.astype(np.int64, copy=False), counts)
        return counts / width

    return over_pairs(agreement, left, right, source=signatures)


@numba.njit(parallel=True, cache=True)
def _equal_counts(  # noqa: PLR0917 (a numba kernel: positional parameters only)
    rows: np.ndarray, left: np.ndarray, right: np.ndarray, out: np.ndarray
) -> None:
    for p in numba.prange(len(left)):
        a, b = left[p], right[p]
        same = 0
        for c in range(rows.shape[1]):
            if rows[a, c] == rows[b, c]:
                same += 1
        out[p] = same
