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
