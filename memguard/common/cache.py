"""The one content-addressed cache of every stage: the built-in corpus, dedup steps, decoded image sets,
trained models and audits.

An entry lives at ``<root>/<kind>/<key>/``. Its key is a hash of the kind's code version
(``memguard.common.cache_steps``: the one place to bump when code changes what an entry would contain) and
of everything that determines its content. An entry is built in ``<key>.partial/`` under an exclusive per-entry lock and renamed into place
with a completion marker, so

- a reader never sees a half-written entry under its final name;
- two runs that share a cache never build the same entry at once: the second waits for the lock, then
  finds the entry complete and reuses it;
- a killed build either restarts from scratch (the default) or, for resumable kinds (training, audits,
  whose code checkpoints inside the folder), continues from what the partial folder holds.

``python -m memguard.common.cache list|prune`` lists and prunes it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memguard.common.cache_steps import STEPS, version_parts

log = logging.getLogger(__name__)

VERSIONS: dict[str, int] = {kind: step.version for kind, step in STEPS.items()}
COMPLETE = "_COMPLETE"  # JSON: kind, version, created (unix seconds)
PARTIAL = ".partial"


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (dataclasses via their ``__dict__``)."""
    blob = json.dumps(parts, sort_keys=True, default=lambda o: getattr(o, "__dict__", str(o)))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def entry_key(kind: str, *parts: Any) -> str:
    """The entry key of ``kind`` for these inputs, its code version included (``cache_steps.version_parts``)."""
    if kind not in STEPS:
        raise KeyError(f"unknown cache kind {kind!r}; known: {sorted(STEPS)}")
    return fingerprint(*version_parts(kind), *parts)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (released by the kernel if the holder dies, so it never goes stale)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _disk_full_hint(err: OSError, where: Path) -> OSError:
    if err.errno == errno.ENOSPC:
        return OSError(
            errno.ENOSPC, f"no space left on the device holding the cache ({where}); free space or set cache_dir"
        )
    return err


@dataclass
class Cache:
    """``get(kind, key, compute)`` returns the folder of a complete entry, building it on a miss."""

    root: Path
    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def get(self, kind: str, key: str, compute: Callable[[Path], object], *, resumable: bool = False) -> Path:
        final = self.path(kind, key)
        if (final / COMPLETE).exists():
            log.info("cache hit: %s (%s)", kind, key)
            self.hits.append(kind)
            return final
        with _locked(final.parent / f".{key}.lock"):
            if (final / COMPLETE).exists():  # another run built it while we waited
                self.hits.append(kind)
                return final
            self.misses.append(kind)
            work = self.work_folder(kind, key, resumable=resumable)
            try:
                compute(work)
                self.commit(kind, key)
            except OSError as err:
                raise _disk_full_hint(err, self.root) from err
        return final

    @contextmanager
    def scratch(self, name: str) -> Iterator[Path]:
        """A fresh folder under ``<root>/scratch/`` for the files one run's tasks share (every worker that
        sees the cache sees it), held under its lock while the block runs (``prune`` leaves it alone) and
        removed after."""
        key = f"{name}-{os.getpid()}-{os.urandom(4).hex()}"
        folder = self.path("scratch", key).with_name(key + PARTIAL)
        lock = folder.parent / f".{key}.lock"
        try:
            with _locked(lock):
                folder.mkdir(parents=True)
                try:
                    yield folder
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
        finally:
            lock.unlink(missing_ok=True)

    def work_folder(self, kind: str, key: str, *, resumable: bool) -> Path:
        """The partial folder an entry is built in (emptied first unless the build resumes)."""
        work = self.path(kind, key).with_name(key + PARTIAL)
        if not resumable:
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        return work

    def commit(self, kind: str, key: str) -> Path:
        """Mark the partial folder complete and rename it into place. Callers that build one entry from
        several cooperating processes (data-parallel training) call this from one of them, without
        ``get``'s lock, which would deadlock their collective operations."""
        final = self.path(kind, key)
        work = final.with_name(key + PARTIAL)
        marker = {"kind": kind, "version": VERSIONS[kind], "created": time.time()}
        (work / COMPLETE).write_text(json.dumps(marker))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
        return final


@dataclass(frozen=True)
class Entry:
    kind: str
    key: str
    path: Path
    complete: bool
    version: int | None
    created: float | None
    bytes: int

    @property
    def stale(self) -> bool:
        return self.complete and self.version != VERSIONS.get(self.kind)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def entries(root: Path) -> list[Entry]:
    """Every entry under ``root``, complete or partial (lock files aside)."""
    found = []
    for kind_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []:
        for path in sorted(p for p in kind_dir.iterdir() if p.is_dir()):
            marker = path / COMPLETE
            meta = json.loads(marker.read_text()) if marker.exists() else {}
            key = path.name.removesuffix(PARTIAL)
            found.append(
                Entry(kind_dir.name, key, path, marker.exists(), meta.get("version"), meta.get("created"), _size(path))
            )
    return found


def prune(
    root: Path,
    *,
    kinds: tuple[str, ...] = (),
    stale: bool = False,
    partial: bool = False,
    older_than_days: float | None = None,
) -> list[Entry]:
    """Remove the entries that match every given filter; returns what was removed. A partial entry is
    removed only while no run holds its lock."""
    removed = []
    now = time.time()
    for entry in entries(root):
        if kinds and entry.kind not in kinds:
            continue
        if stale and not entry.stale:
            continue
        if partial and entry.complete:
            continue
        if older_than_days is not None:
            created = entry.created or entry.path.stat().st_mtime
            if now - created < older_than_days * 86400:
                continue
        lock = entry.path.parent / f".{entry.key}.lock"
        with open(lock, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("skipping %s: a run is building it", entry.path)
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        lock.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def main(argv: list[str] | None = None) -> int:
    """``python -m memguard.common.cache [--root DIR] list | prune [--kind K] [--stale] [--partial] [--older-than D]``"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m memguard.common.cache", description="List or prune the memguard cache.")
    parser.add_argument("--root", default=os.environ.get("MEMGUARD_CACHE", ".cache"), help="cache folder")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one line per entry: kind, key, state, size, age")
    pr = sub.add_parser("prune", help="remove entries matching every filter given (all entries if none)")
    pr.add_argument("--kind", action="append", default=[], choices=sorted(VERSIONS))
    pr.add_argument("--stale", action="store_true", help="only entries of an older code version")
    pr.add_argument("--partial", action="store_true", help="only unfinished entries (no run building them)")
    pr.add_argument("--older-than", type=float, default=None, metavar="DAYS")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.command == "list":
        total = 0
        for e in entries(root):
            state = "stale" if e.stale else ("complete" if e.complete else "partial")
            age = f"{(time.time() - e.created) / 86400:.1f} d" if e.created else "-"
            print(f"{e.kind:20s} {e.key}  {state:8s} {_human(e.bytes):>8s}  {age}")
            total += e.bytes
        print(f"total {_human(total)} in {root}")
        return 0
    removed = prune(
        root, kinds=tuple(args.kind), stale=args.stale, partial=args.partial, older_than_days=args.older_than
    )
    print(f"removed {len(removed)} entries, {_human(sum(e.bytes for e in removed))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
