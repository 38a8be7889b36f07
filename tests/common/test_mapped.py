"""Memory-mapped arrays: written block by block, read back equal, and their pages given back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memguard.common.mapped import load_mapped, release, write_npy


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def test_written_by_blocks_reads_back_equal(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(1000, 7)).astype(np.float32)
    with open(tmp_path / "a.npy", "wb") as fh:
        write_npy(fh, data.dtype, data.shape, blocks=(data[i : i + 300] for i in range(0, 1000, 300)))
    assert np.array_equal(np.load(tmp_path / "a.npy"), data)
    assert np.array_equal(load_mapped(tmp_path / "a.npy"), data)


def test_release_gives_the_pages_back_and_keeps_the_data(tmp_path: Path) -> None:
    data = np.arange(64 * 2**20 // 8, dtype=np.float64).reshape(-1, 16)  # 64 MiB
    np.save(tmp_path / "b.npy", data)
    mapped = load_mapped(tmp_path / "b.npy")
    before = _rss_mb()
    assert float(np.asarray(mapped).sum()) == float(data.sum())  # every page touched
    touched = _rss_mb()
    release(mapped[10:20])  # a view releases its whole mapping
    released = _rss_mb()
    assert touched - before > 50 and released - before < 10
    assert np.array_equal(mapped, data)
    release(data)  # an ordinary array: nothing happens
    assert np.array_equal(mapped, data)
