"""Scattered rows of a memory-mapped .npy: what reading them through the mapping maps into the process
(RssFile) against ``memguard.common.mapped.rows_of`` (pread), and the time per row.

    python bench/mapped_reads.py [--rows 1000000] [--dim 512] [--picked 4096] [--out bench/mapped_reads.json]

The file (rows × dim float32: 2 GB by default) is written to a temporary folder and removed after. The
kernel matters: with large page-cache folios (Linux 6.18 here) each scattered row read through the
mapping maps its whole folio, up to 2 MB; ``madvise(MADV_RANDOM)`` is tried too.
"""

from __future__ import annotations

import argparse
import json
import mmap
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from memguard.common.mapped import load_mapped, release, rows_of


def rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile"):
            return int(line.split()[1])
    return 0


def measure(x: np.ndarray, rows: np.ndarray, read: object) -> dict[str, float]:
    release(x)
    before, start = rss_file_kb(), time.perf_counter()
    read(x, rows)  # type: ignore[operator]
    seconds = time.perf_counter() - start
    return {"mapped_mb": round((rss_file_kb() - before) / 1024, 1), "us_per_row": round(seconds / len(rows) * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--picked", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path("bench/mapped_reads.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(args.rows, args.dim))
        for start in range(0, args.rows, 65_536):
            out[start : start + 65_536] = 1.0
        out.flush()
        del out
        x = load_mapped(path)
        rows = np.random.default_rng(0).integers(0, args.rows, args.picked)
        results: dict[str, object] = {
            "machine": f"{platform.machine()}, Linux {platform.release()}, Python {platform.python_version()}",
            "file_mb": args.rows * args.dim * 4 >> 20,
            "picked_rows": args.picked,
        }
        for rep in ("cold", "warm"):  # the second round reads from the page cache
            results[f"through_mapping_{rep}"] = measure(x, rows, lambda a, r: a[r])
            results[f"rows_of_{rep}"] = measure(x, rows, rows_of)
        x._mmap.madvise(mmap.MADV_RANDOM)  # type: ignore[attr-defined]
        results["through_mapping_madv_random"] = measure(x, rows, lambda a, r: a[r])
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
