"""Which shards a corpus path names: brace patterns, globs and folders, local or in object storage, and
what a folder held that is not a shard (listed, never skipped silently)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import braceexpand

from memguard.common import storage
from memguard.corpus.metadata import SHARD_SUFFIXES, sibling_parquet
from memguard.corpus.sample import printable


def is_shard(name: str) -> bool:
    return name.lower().endswith(SHARD_SUFFIXES)


def find_shards(spec: str | Iterable[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Expand brace patterns (``shard-{000000..000009}.tar``) and folders (searched recursively for tars,
    compressed or not, any case), preserving order. Remote locations (``s3://bucket/{0..9}.tar``,
    ``s3://bucket/*.tar``, ``s3://bucket/folder``) are expanded by their fsspec filesystem. Returns the
    shards and what a folder held that is not one (``{"path", "why"}``), so nothing is skipped silently;
    img2dataset's parquet beside a shard is that shard's metadata, not a skipped file."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    skipped: list[dict[str, str]] = []
    for one in specs:
        if one.startswith("pipe:"):
            raise ValueError(f"pipe: URLs run shell commands and are refused: {one!r}")
        if storage.is_remote(one):
            for name in braceexpand.braceexpand(one):
                listed = storage.expand_remote(name)
                if listed == [name]:  # one named file, read as given (the caller reports a missing one)
                    out.append(name)
                    continue
                out.extend(u for u in listed if is_shard(u))
                skipped.extend(_not_shards([u for u in listed if not is_shard(u)], listed))
            continue
        path = Path(storage.local_path(one))
        if not path.is_dir():
            for name in braceexpand.braceexpand(storage.local_path(one)):
                matched = sorted(glob.glob(name)) if glob.has_magic(name) else []
                if not matched:  # a plain name, or a pattern that matches nothing: the reader reports it missing
                    out.append(name)
                    continue
                out.extend(m for m in matched if is_shard(m))
                skipped.extend(_not_shards([m for m in matched if not is_shard(m)], matched))
            continue

        def unreadable(err: OSError) -> None:
            skipped.append({"path": printable(str(err.filename)), "why": f"unreadable folder: {err.strerror}"})

        for folder, dirs, files in os.walk(path, onerror=unreadable):
            dirs.sort()
            names = [os.path.join(folder, name) for name in sorted(files)]
            out.extend(n for n in names if is_shard(n))
            skipped.extend(_not_shards([n for n in names if not is_shard(n)], names))
    return out, skipped


def _not_shards(others: list[str], listed: list[str]) -> list[dict[str, str]]:
    """The files of a listing that are neither shards nor a shard's img2dataset parquet."""
    metadata = {sibling_parquet(n) for n in listed if is_shard(n)}
    return [
        {"path": printable(storage.redact(n)), "why": "not a tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz)"}
        for n in others
        if n not in metadata
    ]


def expand_urls(spec: str | Iterable[str]) -> list[str]:
    """The shards ``spec`` names (see ``find_shards``)."""
    return find_shards(spec)[0]
