"""Arrays memory-mapped from ``.npy`` files, and giving their pages back after a pass.

A run over 10^6+ samples cannot hold its largest arrays (embeddings: 3 KiB per sample) in anonymous
memory. Mapped from the cache instead, their pages are read on demand; after each block of a pass the
process drops its resident pages again (``MADV_DONTNEED``) — they stay in the OS page cache, which the
kernel may reclaim, so the process's own footprint (its RSS) stays that of one block. Writing them is
sequential file output, which never enters the RSS. Scattered rows are read with ``pread`` instead
(``rows_of``): through the mapping, each would map the whole page-cache folio it lies in.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numba
import numpy as np


def load_mapped(path: Path) -> np.ndarray:
    """The array in ``path``, read-only and memory-mapped."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


@dataclass(frozen=True)
class _FileRows:
    """How to read a mapping's bytes from its file: an open descriptor, the address the mapping starts at
    and the file byte it maps there. Kept on the memmap that owns the mapping (closed with it)."""

    fd: int
    mapped_at: int
    start: int


def _file_rows(array: np.ndarray) -> _FileRows | None:
    """The file behind the memmap that ``array`` is or views (its owner: the one whose base is the
    mapping itself); None for an ordinary array."""
    base: object = array
    owner = None
    while base is not None:
        if isinstance(base, np.memmap):
            owner = base
        base = getattr(base, "base", None)
    if owner is None or owner.filename is None or not isinstance(getattr(owner, "_mmap", None), mmap.mmap):
        return None
    found = owner.__dict__.get("_file_rows")
    if found is None:
        fd = os.open(owner.filename, os.O_RDONLY)
        mapped_at = np.frombuffer(owner._mmap, np.uint8).ctypes.data  # type: ignore[attr-defined]
        found = _FileRows(fd, mapped_at, owner.offset - owner.offset % mmap.ALLOCATIONGRANULARITY)
        owner.__dict__["_file_rows"] = found
        weakref.finalize(owner, os.close, fd)
    return found


def _libc_pread() -> Any:
    pread = ctypes.CDLL(None, use_errno=True).pread
    pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64]
    pread.restype = ctypes.c_ssize_t
    return pread


_PREAD = _libc_pread()


# Not cached: it calls libc through a function pointer of this process (compiled on first use, ~0.5 s).
@numba.njit(nogil=True)
def _pread_rows(fd: int, address: int, rows: np.ndarray, row_bytes: int, first: int, stride: int) -> int:  # noqa: PLR0917 (a numba kernel: positional parameters only)
    """Row ``rows[i]`` of the file's rows (``row_bytes`` each, ``stride`` apart from byte ``first``) into
    ``address + i * row_bytes``; the number of rows read in full."""
    for i in range(len(rows)):
        done = 0
        while done < row_bytes:
            got = _PREAD(fd, address + i * row_bytes + done, row_bytes - done, first + rows[i] * stride + done)
            if got <= 0:
                return i
            done += got
    return len(rows)


def _rows_contiguous(array: np.ndarray) -> bool:
    """Each row's elements are one run of bytes, in C order (the rows themselves may be strided)."""
    step = array.itemsize
    for size, stride in reversed(list(zip(array.shape[1:], array.strides[1:], strict=True))):
        if size > 1 and stride != step:
            return False
        step *= size
    return True


def rows_of(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` (a copy). A memory-mapped array's rows are read from its file with ``pread``
    instead of through the mapping: on kernels that keep files in large page-cache folios (Linux 6.18
    here) touching one scattered row maps its whole folio, up to 2 MB — 100 scattered rows of 2 KiB
    mapped 183 MB, and 4,096 mapped all 2 GB of 10^6 embeddings (bench/RESULTS.md) — while ``pread``
    copies the row and maps nothing. About the speed of fancy indexing for scattered rows (1.5 µs a
    2 KiB row from the page cache)."""
    rows = np.asarray(rows, np.int64)
    source = _file_rows(array) if len(rows) and array.ndim and array.strides[0] > 0 else None
    inner = array.shape[1:]
    if source is None or not _rows_contiguous(array):
        return np.asarray(array[rows])
    n = len(array)
    if rows.min() < -n or rows.max() >= n:
        raise IndexError(f"row out of range for {n} rows")
    rows = np.where(rows < 0, rows + n, rows)
    out = np.empty((len(rows), *inner), array.dtype)
    first = array.ctypes.data - source.mapped_at + source.start  # the file byte of row 0 of ``array``
    done = _pread_rows(source.fd, out.ctypes.data, rows, out.itemsize * out[0].size, first, array.strides[0])
    if done != len(rows):
        raise OSError(f"short read of a memory-mapped array's file at row {rows[done]}")
    return out


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
