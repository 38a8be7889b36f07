"""rows_of: a memory-mapped array's rows read from its file equal fancy indexing, and map nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memguard.common.mapped import load_mapped, release, rows_of


def _rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.fixture
def mapped(tmp_path: Path) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((4_000, 96)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return load_mapped(tmp_path / "x.npy")


def test_rows_of_equals_fancy_indexing_on_arrays_and_views(mapped: np.ndarray) -> None:
    rows = np.random.default_rng(1).integers(-len(mapped) + 300, len(mapped) - 300, 700)
    in_memory = np.array(mapped)
    cube = mapped.reshape(len(mapped), 1, 96)
    views = [mapped, mapped[300:], mapped[:, 10:40], mapped[::2], mapped[:, 5], mapped.T[:50], cube, cube[:, :, ::2],
             in_memory]  # fmt: skip
    for view in views:
        picked = rows % min(len(view), len(mapped) - 300)
        np.testing.assert_array_equal(rows_of(view, picked), np.asarray(view)[picked])
    np.testing.assert_array_equal(rows_of(mapped, rows), in_memory[rows])  # negative rows count from the end
    assert rows_of(mapped, np.zeros(0, np.int64)).shape == (0, 96)
    with pytest.raises(IndexError):
        rows_of(mapped, np.array([len(mapped)]))


def test_scattered_rows_read_by_rows_of_map_no_pages(tmp_path: Path) -> None:
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(65_536, 512))
    big[:] = 1.0
    big.flush()
    del big
    x = load_mapped(tmp_path / "big.npy")  # 128 MiB
    rows = np.arange(0, len(x), 64)  # 1,024 rows 128 KiB apart
    release(x)
    before = _rss_file_kb()
    assert rows_of(x, rows).sum() == len(rows) * 512
    assert _rss_file_kb() - before < 1024  # through the mapping: 4 KiB to 2 MiB per row
