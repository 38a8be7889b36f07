"""Corpus readers: webdataset shards (img2dataset layout), image folders, the built-in corpus.

Every input unit comes out exactly once, either as a ``Sample`` or as a ``Rejection`` with a reason.

The tar reader walks members with the standard library's streaming tarfile instead of webdataset's
``tar_file_iterator`` because the latter skips non-regular members and member names without a dot,
and a truncated shard under a "continue" handler loses its tail silently; we need a row for each of
those, with its byte offset. Keys are split exactly as webdataset splits them (at the first dot of the
file name), so the two agree on what a sample is. Nothing is ever extracted to disk.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import braceexpand

from dedup.io.sample import Reason, Rejection, Sample
from dedup.io.validate import Invalid, Limits, validate_caption

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
CAPTION_EXTS = ("txt",)
META_EXTS = ("json",)
# Members webdataset would unpickle or torch.load: we never open them (RELIABILITY.md).
UNSAFE_EXTS = frozenset({"pyd", "pickle", "pkl", "pth", "pt", "ckpt", "npy", "npz", "mp", "msgpack"})
MAX_KEY_BYTES = 200
_SPLIT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext rule

Item = Sample | Rejection


@dataclass
class _Group:
    key: str
    offset: int
    members: dict[str, bytes] = field(default_factory=dict)


def expand_urls(spec: str | Iterable[str]) -> list[str]:
    """Expand brace patterns (``shard-{000000..000009}.tar``), globs-free, preserving order."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for one in specs:
        if one.startswith("pipe:"):
            raise ValueError(f"pipe: URLs run shell commands and are refused: {one!r}")
        path = Path(one)
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.glob("*.tar")))
        else:
            out.extend(braceexpand.braceexpand(one))
    return out


def _key_problem(key: str) -> str | None:
    if not key:
        return "empty key"
    if key.startswith("/") or ".." in key.split("/") or "\\" in key:
        return "path traversal"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"{len(key.encode())} bytes > {MAX_KEY_BYTES}"
    return None


def _group_to_item(group: _Group, source: str, limits: Limits) -> Item:
    """Turn the members of one key into a Sample, or the Rejection that says why not."""
    problem = _key_problem(group.key)
    if problem:
        return Rejection(group.key, source, Reason.BAD_KEY, problem, group.offset)
    lower = {ext.lower(): ext for ext in group.members}
    image_ext = next((lower[e] for e in IMAGE_EXTS if e in lower), None)
    caption_ext = next((lower[e] for e in CAPTION_EXTS if e in lower), None)
    if image_ext is None or caption_ext is None:
        missing = "image" if image_ext is None else "caption"
        detail = f"no {missing}; members: {sorted(group.members)}"
        return Rejection(group.key, source, Reason.INCOMPLETE_SAMPLE, detail, group.offset)
    try:
        caption = validate_caption(group.members[caption_ext], limits)
    except Invalid as err:
        return Rejection(group.key, source, err.reason, err.detail, group.offset)
    meta: dict[str, object] = {}
    meta_ext = next((lower[e] for e in META_EXTS if e in lower), None)
    if meta_ext is not None:
        try:
            loaded = json.loads(group.members[meta_ext])
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return Rejection(group.key, source, Reason.BAD_META, str(err), group.offset)
        if not isinstance(loaded, dict):
            return Rejection(group.key, source, Reason.BAD_META, type(loaded).__name__, group.offset)
        meta = loaded
    return Sample(group.key, caption, group.members[image_ext], source, image_ext.lower(), meta)


class KeyRegistry:
    """Remembers keys across shards so a repeated key (adjacent or not) becomes ``duplicate_key``."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def admit(self, item: Item) -> Item:
        if isinstance(item, Rejection):
            return item
        first = self._seen.get(item.key)
        if first is not None:
            return Rejection(item.key, item.source, Reason.DUPLICATE_KEY, f"first seen in {first}")
        self._seen[item.key] = item.source
        return item


def read_tar(path: str, limits: Limits | None = None) -> Iterator[Item]:
    """Stream one webdataset shard; yields one item per sample and one per unusable member."""
    limits = limits or Limits()
    try:
        tar = tarfile.open(path, mode="r|*")  # noqa: SIM115 - closed by the with-block below
    except (OSError, tarfile.TarError) as err:
        yield Rejection("", path, Reason.SHARD_UNREADABLE, str(err), 0)
        return
    group: _Group | None = None
    with tar:
        while True:
            header_offset = tar.offset
            try:
                member = tar.next()
            except (tarfile.TarError, EOFError, OSError) as err:
                if group is not None:
                    yield _group_to_item(group, path, limits)
                    group = None
                yield Rejection("", path, Reason.SHARD_TRUNCATED, f"header: {err}", header_offset)
                return
            if member is None:
                break
            name = member.name
            if not member.isreg():
                yield Rejection(name, path, Reason.NOT_REGULAR_FILE, f"tar type {member.type!r}", member.offset)
                continue
            match = _SPLIT.match(name)
            if match is None:
                yield Rejection(name, path, Reason.UNKNOWN_MEMBER, "no extension", member.offset)
                continue
            key, ext = match.group(1), match.group(2)
            if ext.lower() in UNSAFE_EXTS:
                yield Rejection(name, path, Reason.UNSAFE_MEMBER, f".{ext} is never unpickled", member.offset)
                continue
            try:
                fh = tar.extractfile(member)
                data = fh.read() if fh is not None else b""
                if len(data) != member.size:
                    raise EOFError(f"member data ends after {len(data)} of {member.size} bytes")
            except (tarfile.TarError, EOFError, OSError) as err:
                offset = group.offset if group is not None and group.key == key else member.offset
                yield Rejection(key, path, Reason.SHARD_TRUNCATED, f"member {name}: {err}", offset)
                if group is not None and group.key != key:
                    yield _group_to_item(group, path, limits)
                return
            if group is not None and group.key != key:
                yield _group_to_item(group, path, limits)
                group = None
            if group is None:
                group = _Group(key, member.offset)
            if ext in group.members:
                # Same key and extension twice in a row: a repeated sample written back to back.
                yield _group_to_item(group, path, limits)
                group = _Group(key, member.offset)
            group.members[ext] = data
        if group is not None:
            yield _group_to_item(group, path, limits)
        end = _missing_end_marker(path, tar.offset)
        if end is not None:
            yield Rejection("", path, Reason.SHARD_TRUNCATED, end, tar.offset)


def _missing_end_marker(path: str, offset: int) -> str | None:
    """tarfile reads a header cut short, or no end marker, as a normal end of archive: check ourselves
    that an uncompressed shard ends with a zero block where the last member ends."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
        if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00":
            return None  # compressed: the decompressor itself raises on a truncated stream
        fh.seek(offset)
        tail = fh.read(512)
    if len(tail) < 512 or tail.count(0) != 512:
        return f"no end-of-archive block at byte {offset} ({len(tail)} bytes follow)"
    return None


def read_shards(spec: str | Iterable[str], limits: Limits | None = None) -> Iterator[Item]:
    """Read every shard matched by ``spec`` (paths, brace patterns, or a folder of .tar files)."""
    urls = expand_urls(spec)
    if not urls:
        raise FileNotFoundError(f"no shards match {spec!r}")
    registry = KeyRegistry()
    for url in urls:
        for item in read_tar(url, limits):
            yield registry.admit(item)


def read_folder(root: str | os.PathLike[str], limits: Limits | None = None) -> Iterator[Item]:
    """Read an image folder where ``a/b/cat.jpg`` has its caption in ``a/b/cat.txt`` (and optional .json).

    The key is the relative path without extension, with ``/`` and ``.`` replaced so it is a valid
    webdataset key; keys that collide after that become ``duplicate_key`` rejections.
    """
    limits = limits or Limits()
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder not found: {root}")
    groups: dict[str, dict[str, Path]] = {}
    order: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file():
            yield Rejection(rel, str(root), Reason.NOT_REGULAR_FILE, "symlink or special file")
            continue
        stem, _, ext = rel.rpartition(".")
        if not stem:
            yield Rejection(rel, str(root), Reason.UNKNOWN_MEMBER, "no extension")
            continue
        if ext.lower() in UNSAFE_EXTS:
            yield Rejection(rel, str(root), Reason.UNSAFE_MEMBER, f".{ext} is never unpickled")
            continue
        if stem not in groups:
            groups[stem] = {}
            order.append(stem)
        groups[stem][ext] = path
    registry = KeyRegistry()
    for stem in order:
        key = stem.replace("/", "__").replace(".", "_")
        group = _Group(key, -1, {ext: p.read_bytes() for ext, p in groups[stem].items()})
        yield registry.admit(_group_to_item(group, str(root / stem), limits))
