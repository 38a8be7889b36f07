"""MinHash signatures, vectorised with numpy, equal to datasketch's ``affine32`` scheme.

datasketch hashes one token at a time in Python (``MinHash.update``) or one caption at a time
(``MinHash.bulk``). Here the whole batch is tokenised and hashed with array operations: a word's hash
is a polynomial hash over its bytes (cumulative sums, no Python loop), a shingle's hash mixes the
hashes of its words. ``shingle_hash32`` is the same function for one shingle string, so

    datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash32, scheme="affine32")

updated with the same shingles gives exactly our signature (tested): signatures are datasketch
``MinHash``/``LeanMinHash`` hash values, and datasketch's own LSH can index them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash

from dedup.normalize import shingles

SCHEME = "affine32"
EMPTY = np.uint32(0xFFFFFFFF)
_U64 = np.uint64
_P = _U64(0x100000001B3)  # odd, so invertible modulo 2^64
_P_INV = _U64(pow(0x100000001B3, -1, 1 << 64))
_POSITION = np.array(
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
_FMIX = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class MinHashParams:
    """num_perm permutations seeded as datasketch seeds them; word ``ngram``-shingles (or characters)."""

    num_perm: int = 128
    seed: int = 1
    ngram: int = 2
    char_ngrams: bool = False


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads polynomial hashes over all 64 bits."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _fold32(x: np.ndarray) -> np.ndarray:
    return ((x ^ (x >> _U64(32))) & _U64(0xFFFFFFFF)).astype(np.uint32)


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """datasketch's pre-mix for the affine schemes (MurmurHash3's 32-bit finaliser)."""
    s1, m1, s2, m2, s3 = _FMIX
    hv = hv ^ (hv >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    return hv ^ (hv >> s3)


_POWERS: dict[str, np.ndarray] = {"p": np.ones(1, dtype=np.uint64), "inv": np.ones(1, dtype=np.uint64)}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P^i and P^-i for i < n, modulo 2^64; kept between calls (they depend only on n)."""
    if len(_POWERS["p"]) < n:
        size = max(n, 2 * len(_POWERS["p"]))
        with np.errstate(over="ignore"):
            for name, base in (("p", _P), ("inv", _P_INV)):
                seq = np.full(size, base, dtype=np.uint64)
                seq[0] = 1
                _POWERS[name] = np.cumprod(seq)
    return _POWERS["p"][:n], _POWERS["inv"][:n]


def _word_hashes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Polynomial hash of buf[s:e] for each word, from one cumulative sum (wraps modulo 2^64)."""
    powers, inverse = _powers(len(buf))
    with np.errstate(over="ignore"):
        weighted = np.cumsum((buf.astype(np.uint64) + _U64(1)) * powers)
        before = np.where(starts > 0, weighted[np.maximum(starts - 1, 0)], _U64(0))
        return _mix64((weighted[ends - 1] - before) * inverse[starts])


def _combine(word_hashes: np.ndarray) -> np.ndarray:
    """Shingle hash from the hashes of its words, rows = shingles, columns = word positions."""
    n_words = word_hashes.shape[1]
    if n_words > len(_POSITION):
        raise ValueError(f"shingles of more than {len(_POSITION)} words are not supported")
    with np.errstate(over="ignore"):
        total = (word_hashes * _POSITION[:n_words]).sum(axis=1, dtype=np.uint64) + _U64(n_words)
    return _fold32(_mix64(total))


def shingle_hash32(shingle: bytes | str) -> int:
    """The 32-bit hash of one shingle (words separated by single spaces); a datasketch ``hashfunc``."""
    text = shingle.encode("utf-8") if isinstance(shingle, str) else bytes(shingle)
    buf = np.frombuffer(text, dtype=np.uint8)
    words = text.split(b" ")
    ends = np.cumsum([len(w) + 1 for w in words]) - 1
    starts = ends - np.array([len(w) for w in words])
    if len(buf) == 0 or (ends - starts).min() == 0:
        word_h = np.array([_mix64(np.array([0], dtype=np.uint64))[0]] * len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            if w:
                word_h[i] = _word_hashes(np.frombuffer(w, dtype=np.uint8), np.array([0]), np.array([len(w)]))[0]
    else:
        word_h = _word_hashes(buf, starts, ends)
    return int(_combine(word_h[None, :])[0])


class MinHasher:
    """Computes MinHash signatures for many normalised captions at once."""

    def __init__(self, params: MinHashParams, chunk_rows: int = 32_768, threads: int | None = None) -> None:
        if not 1 <= params.ngram <= len(_POSITION):
            raise ValueError(f"ngram must be in [1, {len(_POSITION)}], got {params.ngram}")
        self.params = params
        self.permutations = MinHash(num_perm=params.num_perm, seed=params.seed, scheme=SCHEME).permutations
        self._a = self.permutations[0].astype(np.uint32)
        self._b = self.permutations[1].astype(np.uint32)
        self._chunk_rows = chunk_rows  # shingles per block: the block stays in cache
        self._threads = threads or os.cpu_count() or 1

    def _shingle_hashes(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(pre-mixed uint32 hash per shingle, shingle count per caption), shingles in caption order."""
        p = self.params
        if p.char_ngrams:
            lists = [shingles(c, p.ngram, True) for c in captions]
            counts = np.array([len(s) for s in lists], dtype=np.int64)
            flat = [shingle_hash32(s) for lst in lists for s in lst]
            return _fmix32(np.array(flat, dtype=np.uint32)), counts
        # Captions are normalised (single spaces, no newlines): join with newlines and find words by bytes.
        buf = np.frombuffer("\n".join(captions).encode("utf-8"), dtype=np.uint8)
        if not (buf > 32).any():
            return np.zeros(0, dtype=np.uint32), np.zeros(len(captions), dtype=np.int64)
        is_sep = (buf == 32) | (buf == 10)
        edges = np.diff(np.concatenate([[0], (~is_sep).astype(np.int8), [0]]))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        word_h = _word_hashes(buf, starts, ends)
        caption_of_word = np.searchsorted(np.flatnonzero(buf == 10), starts)
        counts_words = np.bincount(caption_of_word, minlength=len(captions)).astype(np.int64)
        first_word = np.concatenate([[0], np.cumsum(counts_words)[:-1]])
        n = p.ngram
        hashes: list[np.ndarray] = []
        counts = np.zeros(len(captions), dtype=np.int64)
        # Windows of n words that stay inside one caption; shorter captions: one shingle of all words.
        if len(word_h) >= n:
            window = np.lib.stride_tricks.sliding_window_view(word_h, n)
            same = caption_of_word[: len(window)] == caption_of_word[n - 1 :]
            full = _combine(window[same])
            owner = caption_of_word[: len(window)][same]
            hashes.append(full)
            counts += np.bincount(owner, minlength=len(captions))
        else:
            owner = np.zeros(0, dtype=np.int64)
        short = np.flatnonzero((counts_words > 0) & (counts_words < n))
        short_h = np.zeros(len(short), dtype=np.uint32)
        for length in np.unique(counts_words[short]):
            rows = short[counts_words[short] == length]
            idx = first_word[rows][:, None] + np.arange(length)[None, :]
            short_h[np.searchsorted(short, rows)] = _combine(word_h[idx])
        counts[short] += 1
        all_h = np.concatenate([*hashes, short_h])
        all_owner = np.concatenate([owner, short])
        order = np.argsort(all_owner, kind="stable")
        return _fmix32(all_h[order]), counts

    def signatures(self, normalized_captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures uint32 [N, num_perm], empty mask [N]) for already-normalised captions."""
        n = len(normalized_captions)
        out = np.full((n, self.params.num_perm), EMPTY, dtype=np.uint32)
        hv, counts = self._shingle_hashes(normalized_captions)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        # Group captions by shingle count: each group is a dense (rows, count) block, and the min over
        # the block's middle axis is one vectorised reduction (much faster than np.minimum.reduceat).
        # numpy releases the GIL inside ufuncs, so blocks run in parallel threads.
        jobs: list[tuple[np.ndarray, int]] = []
        for count in np.unique(counts[counts > 0]):
            rows = np.flatnonzero(counts == count)
            step = max(1, self._chunk_rows // int(count))
            jobs.extend((rows[lo : lo + step], int(count)) for lo in range(0, len(rows), step))

        def run(job: tuple[np.ndarray, int]) -> None:
            chunk, count = job
            block = hv[offsets[chunk][:, None] + np.arange(count)[None, :]]
            perm = block[:, :, None] * self._a + self._b  # uint32 wraparound is the modulo 2^32
            out[chunk] = perm.min(axis=1)

        with ThreadPoolExecutor(max_workers=self._threads) as pool:
            list(pool.map(run, jobs))
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
