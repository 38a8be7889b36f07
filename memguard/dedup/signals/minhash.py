"""MinHash signatures equal to datasketch's ``affine32`` scheme, at compiled speed.

datasketch hashes one token at a time in Python (``MinHash.update``) or one caption at a time
(``MinHash.bulk``). Here a whole batch of captions goes through one compiled pass
(``memguard.dedup.signals.minhash_kernel``). A shingle's hash is ``shingle_hash32`` below — a word's polynomial hash over
its bytes, mixed, and the shingle's hash from the hashes of its words — so

    datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash32, scheme="affine32")

updated with the same shingles gives exactly our signature (tested): signatures are datasketch
``MinHash``/``LeanMinHash`` hash values, and datasketch's own LSH can index them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from datasketch import MinHash

from memguard.common.config import in_range
from memguard.dedup.signals.minhash_kernel import hashed_signatures, word_signatures
from memguard.dedup.signals.normalize import shingles

SCHEME = "affine32"
EMPTY = np.uint32(0xFFFFFFFF)
_MASK64 = (1 << 64) - 1
_P = 0x100000001B3
POSITION = np.array(
    [
        0x9E3779B97F4A7C15,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0xD6E8FEB86659FD93,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
        0x27D4EB2F165667C5,
        0x94D049BB133111EB,
    ],
    dtype=np.uint64,
)


def _mix64(x: int) -> int:
    """splitmix64's finaliser: spreads polynomial hashes over all 64 bits."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _word_hash(word: bytes) -> int:
    """Σ (byte_i + 1) · P^i modulo 2^64, mixed."""
    h, power = 0, 1
    for byte in word:
        h = (h + (byte + 1) * power) & _MASK64
        power = (power * _P) & _MASK64
    return _mix64(h)


def shingle_hash32(shingle: bytes | str) -> int:
    """The 32-bit hash of one shingle (words separated by spaces); a datasketch ``hashfunc``.

    Written in plain Python, independently of the compiled kernel, so the tests compare two
    implementations of the same definition.
    """
    text = shingle.encode("utf-8") if isinstance(shingle, str) else bytes(shingle)
    words = text.split(b" ")
    if len(words) > len(POSITION):
        raise ValueError(f"shingles of more than {len(POSITION)} words are not supported")
    total = len(words)
    for word, weight in zip(words, POSITION.tolist(), strict=False):
        total = (total + _word_hash(word) * weight) & _MASK64
    mixed = _mix64(total)
    return (mixed ^ (mixed >> 32)) & 0xFFFFFFFF


def _concatenated(captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All captions' UTF-8 bytes in one buffer, with each caption's [start, end) byte range."""
    joined = "\n".join(captions).encode("utf-8")
    lengths = np.fromiter(map(len, captions), dtype=np.int64, count=len(captions))
    if len(joined) != int(lengths.sum()) + len(captions) - 1:  # not all ASCII: count bytes, not characters
        lengths = np.fromiter((len(c.encode("utf-8")) for c in captions), dtype=np.int64, count=len(captions))
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    return np.frombuffer(joined, dtype=np.uint8), starts, starts + lengths


@dataclass(frozen=True)
class MinHashParams:
    """num_perm permutations seeded as datasketch seeds them; word ``ngram``-shingles (or characters)."""

    num_perm: int = 128
    seed: int = 1
    ngram: int = 2
    char_ngrams: bool = False

    def __post_init__(self) -> None:
        in_range("dedup.caption.num_perm", self.num_perm, lo=1, hi=1024)
        in_range("dedup.caption.ngram", self.ngram, lo=1)
        in_range("dedup.caption.seed", self.seed, lo=0)


class MinHasher:
    """Computes MinHash signatures for many normalised captions at once."""

    def __init__(self, params: MinHashParams, threads: int | None = None) -> None:
        if not 1 <= params.ngram <= len(POSITION):
            raise ValueError(f"ngram must be in [1, {len(POSITION)}], got {params.ngram}")
        self.params = params
        self.permutations = MinHash(num_perm=params.num_perm, seed=params.seed, scheme=SCHEME).permutations
        # uint64 so that a·h + b never overflows before the kernel takes it modulo 2^32.
        self._a = self.permutations[0].astype(np.uint32).astype(np.uint64)
        self._b = self.permutations[1].astype(np.uint32).astype(np.uint64)
        self._threads = min(threads or os.cpu_count() or 1, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]

    def signatures(self, normalized_captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures uint32 [N, num_perm], empty mask [N]) for already-normalised captions."""
        n = len(normalized_captions)
        out = np.full((n, self.params.num_perm), EMPTY, dtype=np.uint32)
        counts = np.zeros(n, dtype=np.int64)
        if n == 0:
            return out, counts == 0
        previous = numba.get_num_threads()
        numba.set_num_threads(self._threads)
        try:
            if self.params.char_ngrams:
                lists = [shingles(c, self.params.ngram, True) for c in normalized_captions]
                counts[:] = [len(s) for s in lists]
                hashes = np.array([shingle_hash32(s) for lst in lists for s in lst], dtype=np.uint64)
                offsets = np.concatenate([[0], np.cumsum(counts)])
                hashed_signatures(hashes, offsets, self._a, self._b, out)
            else:
                buf, starts, ends = _concatenated(normalized_captions)
                word_signatures(buf, starts, ends, self.params.ngram, POSITION, self._a, self._b, out, counts)
        finally:
            numba.set_num_threads(previous)
        return out, counts == 0

    def to_datasketch(self, signature: np.ndarray) -> MinHash:
        """Wrap one signature as a datasketch MinHash (scheme passed explicitly, as 2.0 requires)."""
        return MinHash(
            num_perm=self.params.num_perm,
            seed=self.params.seed,
            hashvalues=signature,
            hashfunc=shingle_hash32,
            scheme=SCHEME,
        )


MIN_CAPTION_CHARS = 3  # shorter normalised captions ("a", "") never enter the caption index


def long_enough(captions: list[str]) -> np.ndarray:
    """Normalised captions that may join a caption signal at all (MinHash or embeddings)."""
    return np.array([len(c) >= MIN_CAPTION_CHARS for c in captions], dtype=bool)


def caption_signatures(captions: list[str], params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """(signatures, usable): captions with no shingles or under MIN_CAPTION_CHARS are not usable."""
    signatures, empty = MinHasher(params).signatures(captions)
    return signatures, ~empty & long_enough(captions)
