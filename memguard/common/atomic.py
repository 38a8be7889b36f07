"""Atomic writes: a reader never sees a partial file under a final name."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from memguard.common.config import RunError


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600: give the file the mode open() would have given it
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_json(final: str | os.PathLike[str], obj: Any) -> None:
    write_bytes(final, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_table(final: str | os.PathLike[str], table: pa.Table) -> None:
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)


STAGING_PREFIX = ".staging-"


@contextmanager
def committed_run(final: str | os.PathLike[str], names: tuple[str, ...]) -> Iterator[Path]:
    """Stage a run's outputs in a fresh hidden folder inside ``final`` and commit them as a whole.

    ``names`` are the result's files and folders, its completion marker last (a result "looks complete"
    only with the marker). On success the previous result's marker is removed first, then its other
    names, then the staged ones are renamed into place, the marker last: after an interruption at any
    point ``final`` holds the previous complete result or nothing that looks complete, and never a mix of
    two runs. On failure the staging folder is removed. A second run writing to the same folder at the same
    time is refused; staging folders of killed runs are removed by the next run.
    """
    final = Path(final)
    final.mkdir(parents=True, exist_ok=True)
    with open(final / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another run is writing to {final}; wait for it or choose another output") from None
        for stale in final.glob(STAGING_PREFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = final / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
        staging.mkdir()
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        *parts, marker = names
        (final / marker).unlink(missing_ok=True)
        for name in parts:
            _remove(final / name)
        for name in parts:
            if (staging / name).exists():
                os.replace(staging / name, final / name)
        os.replace(staging / marker, final / marker)
        shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def link_folder(link: Path, target: Path) -> None:
    """``link`` → ``target`` (a folder in the cache), replacing an older link; nothing if there is no target."""
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():  # an older run's outputs written in place
        shutil.rmtree(link)
    if target.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve(), target_is_directory=True)
