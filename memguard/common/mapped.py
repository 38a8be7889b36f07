"""Arrays memory-mapped from ``.npy`` files, and giving their pages back after a pass.

A run over 10^6+ samples cannot hold its largest arrays (embeddings: 3 KiB per sample) in anonymous
memory. Mapped from the cache instead, their pages are read on demand; after each block of a pass the
process drops its resident pages again (``MADV_DONTNEED``) — they stay in the OS page cache, which the
kernel may reclaim, so the process's own footprint (its RSS) stays that of one block. Writing them is
sequential file output, which never enters the RSS.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np


def load_mapped(path: Path) -> np.ndarray:
    """The array in ``path``, read-only and memory-mapped."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def release(*arrays: np.ndarray) -> None:
    """Drop this process's resident pages of every memory-mapped array among ``arrays`` (or of the mapping
    a view of it comes from); ordinary arrays are left alone. Their contents do not change."""
    for array in arrays:
        base: object = array
        while base is not None:
            handle = getattr(base, "_mmap", None)
            if isinstance(handle, mmap.mmap):
                handle.madvise(mmap.MADV_DONTNEED)
                break
            base = getattr(base, "base", None)


def write_npy(fh: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], *, blocks: Iterable[np.ndarray]) -> None:
    """An ``.npy`` file written block by block (rows in order) — the whole array never in memory."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(fh, header)
    written = 0
    for block in blocks:
        fh.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
        written += len(block)
    if written != shape[0]:
        raise ValueError(f"wrote {written} rows of an array declared with {shape[0]}")


def file_backed(array: np.ndarray, *, spare: Path) -> Path:
    """The ``.npy`` file ``array`` is memory-mapped from (the whole of it), else ``spare`` with a copy of
    it written there: what a task in another process, or on another node, opens instead of receiving the
    array."""
    if isinstance(array, np.memmap) and array.filename is not None:
        whole = load_mapped(Path(array.filename))
        if isinstance(whole, np.memmap) and whole.shape == array.shape and whole.offset == array.offset:
            return Path(array.filename)
    spare.parent.mkdir(parents=True, exist_ok=True)
    np.save(spare, np.ascontiguousarray(array), allow_pickle=False)
    return spare
