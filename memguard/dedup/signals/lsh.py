"""LSH banding over MinHash signatures, by sorting band keys instead of inserting into hash tables.

datasketch's ``MinHashLSH`` inserts one key at a time into per-band dicts; for millions of signatures
the same buckets come out of one ``argsort`` per band. Band/row counts come from datasketch's own
optimiser so the false-positive/false-negative trade-off is the one datasketch documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from datasketch import MinHashLSH

from memguard.common.config import in_range
from memguard.common.mapped import release
from memguard.dedup.signals.pairs import code_pairs, pair_agreement, pair_codes

_ROW_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class LshParams:
    """threshold: estimated Jaccard a candidate must reach to be kept; bands/rows derived from it unless
    given. It is the floor of the cached step: the cluster rule's caption threshold (≥ it) is applied later.

    max_bucket: buckets larger than this emit a chain (each member paired with the next) instead of all
    pairs — enough for connected components, linear instead of quadratic in the bucket size.
    """

    threshold: float = 0.5
    bands: int | None = None
    rows: int | None = None
    max_bucket: int = 64

    def __post_init__(self) -> None:
        in_range("dedup.caption.lsh_threshold", self.threshold, lo=0.01, hi=1.0)
        for name in ("bands", "rows"):
            if getattr(self, name) is not None:
                in_range(f"dedup.caption.{name}", getattr(self, name), lo=1)
        in_range("dedup.caption.max_bucket", self.max_bucket, lo=2)


def bands_rows(params: LshParams, num_perm: int) -> tuple[int, int]:
    if params.bands and params.rows:
        if params.bands * params.rows > num_perm:
            raise ValueError(f"bands*rows = {params.bands * params.rows} > num_perm = {num_perm}")
        return params.bands, params.rows
    # datasketch's own choice (equal false-positive and false-negative weights), read from its public
    # attributes: an empty in-memory index costs only the parameter search.
    index = MinHashLSH(threshold=params.threshold, num_perm=num_perm, weights=(0.5, 0.5))
    return int(index.b), int(index.r)


def _band_keys(block: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of a (N, rows) uint32 block (collisions only add candidates to verify)."""
    key = np.zeros(len(block), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in range(block.shape[1]):
            key = (key ^ block[:, col].astype(np.uint64)) * _ROW_MIX
    return key


def candidate_pairs(signatures: np.ndarray, usable: np.ndarray, params: LshParams) -> np.ndarray:
    """Pairs (i, j), i < j, that share at least one band, sorted; rows with ``usable`` False never pair."""
    bands, _ = bands_rows(params, signatures.shape[1])
    return code_pairs(candidate_codes(signatures, usable, params, bands=range(bands)), len(signatures))


def candidate_codes(signatures: np.ndarray, usable: np.ndarray, params: LshParams, *, bands: range) -> np.ndarray:
    """The sorted distinct codes of the pairs that share one of ``bands`` (a task owns a range of them).

    Each pair is collected as one int64 code ``i * n + j`` (8 bytes, deduplicated by one 1-D sort), and
    the codes are compacted whenever the pending ones outnumber the distinct ones twice, so memory follows
    the distinct candidates, not their sum over the bands."""
    _, rows = bands_rows(params, signatures.shape[1])
    index = np.flatnonzero(usable)
    n = len(signatures)
    codes = np.zeros(0, np.int64)
    pending: list[np.ndarray] = []
    for band in bands:
        keys = _band_keys(signatures[index, band * rows : (band + 1) * rows])
        release(signatures)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        boundaries = np.flatnonzero(np.diff(sorted_keys)) + 1
        starts = np.concatenate([[0], boundaries])
        sizes = np.diff(np.concatenate([starts, [len(keys)]]))
        # Adjacent members of every bucket (a chain): covers buckets of any size linearly.
        same_next = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        found = [pair_codes(index[order[same_next]], index[order[same_next + 1]], n)]
        # Small buckets: all remaining pairs, so verification sees each candidate pair directly.
        for size in np.unique(sizes[(sizes > 2) & (sizes <= params.max_bucket)]):
            bucket_starts = starts[sizes == size]
            first, second = np.triu_indices(int(size), k=2)
            members = index[order[bucket_starts[:, None] + np.arange(size)[None, :]]]
            found.append(pair_codes(members[:, first].ravel(), members[:, second].ravel(), n))
        pending += found
        if sum(len(c) for c in pending) > 2 * max(len(codes), 1 << 20):
            codes, pending = _distinct(np.concatenate([codes, *pending])), []
    return _distinct(np.concatenate([codes, *pending]))


def _distinct(codes: np.ndarray) -> np.ndarray:
    """Sorted distinct values (NumPy 2's hash-based ``np.unique`` is several times slower on these)."""
    codes = np.sort(codes)
    keep = np.empty(len(codes), bool)
    keep[:1] = True
    np.not_equal(codes[1:], codes[:-1], out=keep[1:])
    return codes[keep]


def caption_pairs(
    signatures: np.ndarray, usable: np.ndarray, params: LshParams, *, tasks: BandTasks | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """LSH candidates verified by estimated Jaccard ≥ threshold: (pairs [M, 2], jaccard [M]), sorted.
    With ``tasks``, a large corpus's bands are searched and verified as tasks (``lsh_tasks.py``); the
    pairs are the same either way."""
    n = len(signatures)
    if tasks is not None and tasks.worth_it(int(np.count_nonzero(usable))):
        codes, jaccard = tasks.verified(signatures, usable, params)
        return code_pairs(codes, n), jaccard
    bands, _ = bands_rows(params, signatures.shape[1])
    codes, jaccard = verified_codes(signatures, usable, params, bands=range(bands))
    return code_pairs(codes, n), jaccard


def verified_codes(
    signatures: np.ndarray, usable: np.ndarray, params: LshParams, *, bands: range
) -> tuple[np.ndarray, np.ndarray]:
    """The sorted codes of ``bands``' candidate pairs whose estimated Jaccard reaches the threshold, and
    that Jaccard (a pair's own: the same whichever band found it)."""
    codes = candidate_codes(signatures, usable, params, bands=bands)
    pairs = code_pairs(codes, len(signatures))
    jaccard = pair_agreement(signatures, pairs[:, 0], pairs[:, 1])
    keep = jaccard >= params.threshold
    return codes[keep], jaccard[keep]


class BandTasks(Protocol):
    """How the bands run as tasks (``memguard/dedup/signals/lsh_tasks.py``)."""

    def worth_it(self, usable: int) -> bool: ...

    def verified(
        self, signatures: np.ndarray, usable: np.ndarray, params: LshParams
    ) -> tuple[np.ndarray, np.ndarray]: ...
