"""The compiled inner loop of MinHash: bytes of many captions → signatures, one pass, all cores.

No kept library computes datasketch-compatible signatures at this speed (datasketch hashes in Python,
rensa uses its own hash, so its values are not datasketch's), hence this hand-written kernel. It fuses
what would otherwise be many array passes — word hashes, shingle hashes, datasketch's pre-mix and the
128 affine permutations with their running minimum — so each caption is read once and its signature
row stays in cache. numba compiles it on first use (cached on disk afterwards).

The arithmetic is that of ``memguard.dedup.signals.minhash.shingle_hash32`` (a word's polynomial hash over its bytes,
mixed; a shingle's hash from the hashes of its words) followed by datasketch's ``affine32`` scheme;
the tests check the result against datasketch's own ``MinHash`` fed through ``shingle_hash32``.

The kernels take positional parameters only: numba's nopython mode does not compile keyword-only ones.
"""

from __future__ import annotations

import numba
import numpy as np

U64 = np.uint64
P = U64(0x100000001B3)
MASK32 = U64(0xFFFFFFFF)


@numba.njit(inline="always")
def mix64(x: np.uint64) -> np.uint64:
    """splitmix64's finaliser."""
    x = x ^ (x >> U64(30))
    x = x * U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> U64(27))
    x = x * U64(0x94D049BB133111EB)
    return x ^ (x >> U64(31))


@numba.njit(inline="always")
def premix32(x: np.uint64) -> np.uint64:
    """Fold a 64-bit shingle hash to 32 bits, then datasketch's affine pre-mix (MurmurHash3's fmix32)."""
    h = (x ^ (x >> U64(32))) & MASK32
    h = h ^ (h >> U64(16))
    h = (h * U64(0x85EBCA6B)) & MASK32
    h = h ^ (h >> U64(13))
    h = (h * U64(0xC2B2AE35)) & MASK32
    return h ^ (h >> U64(16))


@numba.njit(inline="always")
def permute_min(row: np.ndarray, hv: np.uint64, a: np.ndarray, b: np.ndarray) -> None:
    """row[k] = min(row[k], (a[k]·hv + b[k]) mod 2^32): one shingle folded into a signature."""
    for k in range(len(a)):
        v = (a[k] * hv + b[k]) & MASK32
        if v < row[k]:
            row[k] = v


@numba.njit(parallel=True, cache=True)
def word_signatures(
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    ngram: int,
    position: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    out: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Word ``ngram``-shingle signatures of captions ``buf[starts[i]:ends[i]]`` into ``out`` (pre-filled
    with the empty value); ``counts[i]`` = shingles of caption i. Bytes ≤ 32 separate words; a caption
    with fewer than ``ngram`` words is one shingle of all of them."""
    for c in numba.prange(len(starts)):
        s, e = starts[c], ends[c]
        words = np.empty((e - s) // 2 + 1, np.uint64)
        n_words = 0
        h = U64(0)
        power = U64(1)
        in_word = False
        for i in range(s, e):
            byte = buf[i]
            if byte <= 32:
                if in_word:
                    words[n_words] = mix64(h)
                    n_words += 1
                    h, power, in_word = U64(0), U64(1), False
            else:
                h = h + (U64(byte) + U64(1)) * power
                power = power * P
                in_word = True
        if in_word:
            words[n_words] = mix64(h)
            n_words += 1
        if n_words == 0:
            counts[c] = 0
            continue
        width = min(ngram, n_words)
        counts[c] = n_words - width + 1
        row = out[c]
        for j in range(n_words - width + 1):
            total = U64(width)
            for k in range(width):
                total = total + words[j + k] * position[k]
            permute_min(row, premix32(mix64(total)), a, b)


@numba.njit(parallel=True, cache=True)
def hashed_signatures(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Signatures from precomputed 64-bit shingle hashes: caption i owns hashes[offsets[i]:offsets[i+1]]."""
    for c in numba.prange(len(offsets) - 1):
        row = out[c]
        for j in range(offsets[c], offsets[c + 1]):
            permute_min(row, premix32(hashes[j]), a, b)
