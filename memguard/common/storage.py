"""Paths that may live in object storage: ``s3://``, ``gs://``, ``hf://``, ``https://`` through fsspec.

A local path stays a plain path (``open``, ``os.walk``); anything with a protocol goes through the fsspec
filesystem for it (``s3fs`` for ``s3://``: ``pip install -e '.[s3]'``). Credentials come only from the
environment or fsspec's own configuration (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``~/.aws``,
``FSSPEC_S3_*``); they are never part of a path we log: ``redact`` strips user info and query strings
(presigned URLs carry their signature there) from every location written to stats or the console.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from memguard.common.atomic import STAGING_PREFIX

_PROTOCOL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
GLOB_CHARS = frozenset("*?[")


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for ``proto://...`` (``file://`` aside): a path that only fsspec can open."""
    match = _PROTOCOL.match(str(location))
    return match is not None and match.group(1).lower() != "file"


def local_path(location: str | os.PathLike[str]) -> str:
    """``file:///a/b`` → ``/a/b``; other local paths unchanged."""
    text = str(location)
    return text[len("file://") :] if text.lower().startswith("file://") else text


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a remote URL; a clear error when its package is missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        raise ImportError(f"reading {redact(url)} needs an fsspec filesystem package: {err}") from None


def redact(location: str) -> str:
    """A location safe to log: no ``user:password@`` and no query string or fragment."""
    if not is_remote(location):
        return location
    parts = urlsplit(location)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class NotRegularFile(OSError):
    """A local input that is a named pipe, device, socket or folder: never read (a FIFO would block forever)."""


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a local file for reading bytes only if it is a regular file. The open itself does not block
    (O_NONBLOCK: a FIFO with no writer returns at once) and the check is on the opened descriptor, so a
    file swapped for a pipe between a check and the open is caught too."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a named pipe" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a special file"
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({kind})", os.fspath(path))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_binary(location: str) -> IO[bytes]:
    """Open a local (regular) or remote file for reading bytes (remote reads are ranged, so ``seek`` is cheap)."""
    if not is_remote(location):
        return open_regular(local_path(location))
    fs, path = filesystem(location)
    return fs.open(path, "rb")


def exists(location: str) -> bool:
    if not is_remote(location):
        return Path(local_path(location)).exists()
    fs, path = filesystem(location)
    return bool(fs.exists(path))


def expand_remote(pattern: str) -> list[str]:
    """One remote name (after brace expansion): a glob → its sorted matches; a folder → every file under
    it, sorted; a file → itself (missing files are returned too: the caller reports them)."""
    fs, path = filesystem(pattern)
    fs.invalidate_cache()  # listings may be cached from before another process wrote
    if GLOB_CHARS & set(path):
        return [fs.unstrip_protocol(p) for p in sorted(fs.glob(path))]
    if fs.isdir(path):
        return [fs.unstrip_protocol(p) for p in sorted(fs.find(path))]
    return [pattern]


def stat_key(location: str) -> tuple[str, int, int | str]:
    """What identifies a file's content cheaply: (location, size, mtime — or the object's ETag)."""
    if not is_remote(location):
        stat = Path(local_path(location)).stat()
        return location, stat.st_size, stat.st_mtime_ns
    fs, path = filesystem(location)
    info = fs.info(path)
    version = (
        info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("mtime") or info.get("LastModified")
    )
    return redact(location), int(info.get("size") or 0), str(version)


@contextmanager
def committed_remote_run(final: str, names: tuple[str, ...]) -> Iterator[Path]:
    """``memguard.common.atomic.committed_run`` for an object-storage folder: the outputs are written to a local
    temporary folder, uploaded to a fresh ``<final>/.staging-*`` prefix, then moved into place with the
    marker (``names[-1]``) removed first and written last — so after a kill at any point ``final`` holds the
    previous complete result or nothing that looks complete. Stale staging prefixes of killed runs are
    removed by the next run. Object stores have no locks: two runs writing one ``output=`` at the same
    time are not refused here (they are on local disk)."""
    fs, root = filesystem(final)
    root = root.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="memguard-out-") as local:
        yield Path(local)
        fs.invalidate_cache()
        stale = [p for prefix in fs.glob(f"{root}/{STAGING_PREFIX}*") for p in fs.find(prefix)]
        if stale:
            fs.rm(stale)
        staging = f"{root}/{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
        *parts, marker = names
        files = sorted(p for name in names for p in _files(Path(local) / name))
        relative = [p.relative_to(local).as_posix() for p in files]
        # Upload everything before touching the previous result (object by object: fsspec's recursive
        # put/mv treat a "folder" differently depending on whether its prefix exists yet).
        fs.put([str(p) for p in files], [f"{staging}/{r}" for r in relative])
        fs.invalidate_cache()
        if fs.exists(f"{root}/{marker}"):
            fs.rm(f"{root}/{marker}")
        old = [p for name in parts for p in fs.find(f"{root}/{name}")]
        if old:
            fs.rm(old)
        moved = [r for r in relative if r != marker]
        if moved:
            fs.copy([f"{staging}/{r}" for r in moved], [f"{root}/{r}" for r in moved])
        fs.copy(f"{staging}/{marker}", f"{root}/{marker}")
        fs.invalidate_cache()
        fs.rm(fs.find(staging))


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return [p for p in path.rglob("*") if p.is_file()]
    return [path] if path.exists() else []
