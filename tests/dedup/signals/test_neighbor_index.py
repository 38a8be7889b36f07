"""The neighbour index's training sample: the seeded draw's rows, read from a memory-mapped array's file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import memguard.dedup.signals.neighbor_index as neighbor_index
from memguard.common.mapped import load_mapped


def test_sample_of_a_mapped_array_is_the_seeded_draw(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((10_000, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mapped = load_mapped(tmp_path / "x.npy")
    size = 6_161
    expected = x[np.sort(np.random.default_rng(0).choice(len(x), size, replace=False))]
    sample = neighbor_index._sample(mapped, size)
    assert not isinstance(sample, np.memmap)
    np.testing.assert_array_equal(sample, expected)
    assert neighbor_index._sample(mapped, len(x)) is mapped  # the whole array: no copy


def test_sq8_codes_find_the_pairs_float32_codes_find() -> None:
    """IVF over 8-bit codes proposes the same near-duplicate pairs as over float32 codes (both rescored
    exactly): 3,000 vectors, 300 of them with a planted copy at cosine ~0.95."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((3_000, 64)).astype(np.float32)
    base[2_700:] = base[:300] + 0.33 * rng.standard_normal((300, 64)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    found = {}
    for encoding in ("sq8", "flat"):
        params = neighbor_index.IndexParams(kind="ivf", exact_below=0, nlist=16, nprobe=4, reduce_dim=32, encoding=encoding)
        sims, idx = neighbor_index.searcher(base, params)(base, 4)
        found[encoding] = {(i, int(j)) for i in range(len(base)) for j, s in zip(idx[i], sims[i], strict=True)
                           if j != i and s >= 0.8}  # fmt: skip
    assert len(found["flat"]) >= 2 * 280 and found["sq8"] == found["flat"]
