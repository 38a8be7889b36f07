"""MinHash signatures equal datasketch's; LSH finds what datasketch's MinHashLSH finds."""

from __future__ import annotations

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from memguard.dedup.signals.lsh import LshParams, bands_rows, candidate_pairs, caption_pairs
from memguard.dedup.signals.minhash import MinHasher, MinHashParams, shingle_hash32
from memguard.dedup.signals.normalize import normalize_caption, shingles


def _reference(caption: str, params: MinHashParams) -> np.ndarray:
    ref = MinHash(num_perm=params.num_perm, seed=params.seed, hashfunc=shingle_hash32, scheme="affine32")
    for token in shingles(caption, params.ngram, params.char_ngrams):
        ref.update(token)
    return ref.hashvalues


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60), min_size=1, max_size=8),
    st.integers(1, 4),
    st.booleans(),
)
def test_signatures_equal_datasketch(captions: list[str], ngram: int, char: bool) -> None:
    params = MinHashParams(num_perm=64, seed=7, ngram=ngram, char_ngrams=char)
    normalised = [normalize_caption(c) for c in captions]
    signatures, empty = MinHasher(params).signatures(normalised)
    for caption, sig, is_empty in zip(normalised, signatures, empty, strict=True):
        assert is_empty == (not shingles(caption, ngram, char))
        if not is_empty:
            assert (sig == _reference(caption, params)).all(), caption


def test_lean_minhash_round_trip() -> None:
    hasher = MinHasher(MinHashParams())
    sig, _ = hasher.signatures(["waving hand sign medium skin tone", "waving hand sign dark skin tone"])
    a, b = hasher.to_datasketch(sig[0]), hasher.to_datasketch(sig[1])
    lean = LeanMinHash(a)
    assert (lean.hashvalues == sig[0]).all() and 0 < a.jaccard(b) < 1


def test_normalisation_folds_case_punctuation_unicode() -> None:
    assert normalize_caption("  Ｗaving   HAND!! sign…") == "waving hand sign"


def test_lsh_matches_datasketch_index() -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    base = [" ".join(rng.choice(words, 12)) for _ in range(300)]
    captions = base + [b + " extra" for b in base[:60]] + [b.replace("w1", "x", 1) for b in base[60:120]]
    params = MinHashParams(num_perm=128, ngram=2)
    hasher = MinHasher(params)
    sigs, empty = hasher.signatures(captions)
    lsh_params = LshParams(threshold=0.6)
    bands, rows = bands_rows(lsh_params, 128)
    index = MinHashLSH(num_perm=128, params=(bands, rows))
    for i, sig in enumerate(sigs):
        index.insert(str(i), hasher.to_datasketch(sig))
    theirs = {
        tuple(sorted((i, int(j))))
        for i, sig in enumerate(sigs)
        for j in index.query(hasher.to_datasketch(sig))
        if int(j) != i
    }
    ours = {tuple(p) for p in candidate_pairs(sigs, ~empty, lsh_params).tolist()}
    assert theirs <= ours  # band-key collisions may only add candidates
    pairs, jac = caption_pairs(sigs, ~empty, lsh_params)
    assert (jac >= 0.6).all()
    found = {tuple(p) for p in pairs.tolist()}
    assert {(i, 300 + i) for i in range(60)} <= found


def test_empty_captions_never_pair() -> None:
    hasher = MinHasher(MinHashParams())
    sigs, empty = hasher.signatures(["", "", "", "a real caption"])
    assert empty.tolist() == [True, True, True, False]
    assert len(candidate_pairs(sigs, ~empty, LshParams())) == 0
