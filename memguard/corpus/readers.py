"""Corpus readers: webdataset shards (img2dataset layout), image folders, the built-in corpus.

Every input unit comes out exactly once, either as a ``Sample`` or as a ``Rejection`` with a reason.

The tar reader walks members with the standard library's streaming tarfile instead of webdataset's
``tar_file_iterator`` because the latter skips non-regular members and member names without a dot,
and a truncated shard under a "continue" handler loses its tail silently; we need a row for each of
those, with its byte offset. Keys are split exactly as webdataset splits them (at the first dot of the
file name), so the two agree on what a sample is. Nothing is ever extracted to disk.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from memguard.common import storage
from memguard.corpus.discover import expand_urls
from memguard.corpus.metadata import (
    CaptionSource,
    caption_from_meta,
    folder_metadata,
    shard_metadata,
)
from memguard.corpus.sample import Reason, Rejection, Sample, printable
from memguard.corpus.validate import Invalid, Limits, validate_caption

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
CAPTION_EXTS = ("txt",)
META_EXTS = ("json",)
# Members webdataset would unpickle or torch.load: we never open them (docs/RELIABILITY.md).
UNSAFE_EXTS = frozenset({"pyd", "pickle", "pkl", "pth", "pt", "ckpt", "npy", "npz", "mp", "msgpack"})
MAX_KEY_BYTES = 200
_SPLIT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext rule

Item = Sample | Rejection


@dataclass
class _Group:
    key: str
    offset: int
    members: dict[str, bytes] = field(default_factory=dict)
    problem: tuple[Reason, str] | None = None  # a member that could not be read: the unit is rejected
    extra: dict[str, Any] | None = None  # its row in a metadata file (img2dataset parquet, metadata.jsonl)


def _key_problem(key: str) -> str | None:
    if not key:
        return "empty key"
    if printable(key) != key:
        return "not UTF-8"
    if key.startswith("/") or ".." in key.split("/") or "\\" in key:
        return "path traversal"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"{len(key.encode())} bytes > {MAX_KEY_BYTES}"
    return None


def _group_to_item(group: _Group, source: str, limits: Limits, *, captions: CaptionSource) -> Item:
    """Turn the members of one key into a Sample, or the Rejection that says why not — whatever goes wrong."""
    try:
        return _to_item(group, source, limits, captions=captions)
    except MemoryError:
        raise
    except Exception as err:  # the per-sample boundary: one unit's surprise is one row, not a crashed run
        return Rejection(printable(group.key), source, Reason.READ_ERROR, f"{type(err).__name__}: {err}", group.offset)


def _to_item(group: _Group, source: str, limits: Limits, *, captions: CaptionSource) -> Item:
    problem = _key_problem(group.key)
    if problem:
        return Rejection(printable(group.key), source, Reason.BAD_KEY, problem, group.offset)
    if group.problem is not None:
        return Rejection(group.key, source, group.problem[0], group.problem[1], group.offset)
    lower = {ext.lower(): ext for ext in group.members}
    image_ext = next((lower[e] for e in IMAGE_EXTS if e in lower), None)
    if image_ext is None:
        detail = f"no image; members: {sorted(group.members)}"
        return Rejection(group.key, source, Reason.INCOMPLETE_SAMPLE, detail, group.offset)
    meta: dict[str, Any] = dict(group.extra or {})
    meta_ext = next((lower[e] for e in META_EXTS if e in lower), None)
    if meta_ext is not None:
        try:
            loaded = json.loads(group.members[meta_ext])
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return Rejection(group.key, source, Reason.BAD_META, str(err), group.offset)
        if not isinstance(loaded, dict):
            return Rejection(group.key, source, Reason.BAD_META, type(loaded).__name__, group.offset)
        meta.update(loaded)  # the sample's own .json wins over a metadata file's row
    caption_ext = next((lower[e] for e in CAPTION_EXTS if e in lower), None)
    raw: bytes | None = None
    if captions.field is None and caption_ext is not None:
        raw = group.members[caption_ext]
        missing = ""
    else:
        text, missing = caption_from_meta(meta, captions)
        raw = None if text is None else text.encode("utf-8", "surrogatepass")
    caption = ""
    if raw is None:
        if captions.required:
            where = "no .txt member and " if captions.field is None else ""
            detail = f"no caption: {where}{missing}; members: {sorted(group.members)}"
            return Rejection(group.key, source, Reason.INCOMPLETE_SAMPLE, detail, group.offset)
    else:
        try:
            caption = validate_caption(raw, limits)
        except Invalid as err:
            if captions.required:
                return Rejection(group.key, source, err.reason, err.detail, group.offset)
    return Sample(group.key, caption, group.members[image_ext], source, image_ext.lower(), meta, group.offset)


class KeyRegistry:
    """Remembers keys across shards so a repeated key (adjacent or not) becomes ``duplicate_key``."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def admit(self, item: Item) -> Item:
        if isinstance(item, Rejection):
            return item
        first = self._seen.get(item.key)
        if first is not None:
            return Rejection(item.key, item.source, Reason.DUPLICATE_KEY, f"first seen in {first}", item.offset)
        self._seen[item.key] = item.source
        return item


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """The shard's bytes, decompressed by the standard library's gzip/bz2/lzma readers when compressed.
    Their ``read(n)`` returns at most n bytes however well the data compresses; tarfile's own stream
    decompression hands back whole decompressed blocks (10 MB per 10 KB of gzipped zeros) and slows to a
    crawl on a highly compressed member."""
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.BZ2File(raw)
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)
    return raw


def read_tar(path: str, limits: Limits | None = None, captions: CaptionSource | None = None) -> Iterator[Item]:
    """Stream one webdataset shard (local or remote); yields one item per sample and one per unusable
    member, then one per row of its img2dataset parquet that matched no sample."""
    limits = limits or Limits()
    captions = captions or CaptionSource()
    sidecar = shard_metadata(path)
    yield from sidecar.problems
    with ExitStack() as files:
        try:
            stream = files.enter_context(_decompressed(files.enter_context(storage.open_binary(path))))
            # 64 KiB reads: 16k calls stream past a 1 GiB member; larger buffers slow small members down
            # (tarfile copies the rest of its buffer on every read).
            tar = files.enter_context(tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 16))
        except storage.NotRegularFile as err:
            yield Rejection("", path, Reason.NOT_REGULAR_FILE, f"shard: {err.strerror}", 0)
            yield from sidecar.leftovers(path)
            return
        except (OSError, EOFError, tarfile.TarError) as err:
            yield Rejection("", path, Reason.SHARD_UNREADABLE, str(err), 0)
            yield from sidecar.leftovers(path)
            return
        yield from _read_members(tar, path, limits, captions=captions, row_of=sidecar.take)
        yield from sidecar.leftovers(path)


def _read_members(
    tar: tarfile.TarFile,
    path: str,
    limits: Limits,
    *,
    captions: CaptionSource,
    row_of: Callable[[str], dict[str, Any] | None],
) -> Iterator[Item]:
    group: _Group | None = None

    def item_of(group: _Group) -> Item:
        group.extra = row_of(group.key)
        return _group_to_item(group, path, limits, captions=captions)

    while True:
        header_offset = tar.offset
        try:
            member = tar.next()
        except (tarfile.TarError, EOFError, OSError) as err:
            if group is not None:
                yield item_of(group)
                group = None
            yield Rejection("", path, Reason.SHARD_TRUNCATED, f"header: {err}", header_offset)
            return
        if member is None:
            break
        name = printable(member.name)
        named = _member_key(member, name, path)
        if isinstance(named, Rejection):
            yield named
            continue
        key, ext = named
        too_large = member.size > limits.max_member_bytes
        try:
            data = _member_data(tar, member, too_large=too_large)
        except (tarfile.TarError, EOFError, OSError) as err:
            offset = group.offset if group is not None and group.key == key else member.offset
            row_of(key)  # this row is the unit's one manifest row; its metadata row is not another
            yield Rejection(printable(key), path, Reason.SHARD_TRUNCATED, f"member {name}: {err}", offset)
            if group is not None and group.key != key:
                yield item_of(group)
            return
        if group is not None and group.key != key:
            yield item_of(group)
            group = None
        if group is None:
            group = _Group(key, member.offset)
        if ext in group.members:
            # Same key and extension twice in a row: a repeated sample written back to back.
            yield item_of(group)
            group = _Group(key, member.offset)
        group.members[ext] = data
        if too_large:
            group.problem = (Reason.TOO_LARGE, f"member {name}: {member.size} bytes > {limits.max_member_bytes}")
    if group is not None:
        yield item_of(group)
    end = _missing_end_marker(path, tar.offset)
    if end is not None:
        yield Rejection("", path, Reason.SHARD_TRUNCATED, end, tar.offset)


def _member_data(tar: tarfile.TarFile, member: tarfile.TarInfo, *, too_large: bool) -> bytes:
    """The member's bytes; empty for an oversized member, which is never read (advancing to the next header
    streams past it in blocks). A member cut short raises EOFError."""
    fh = None if too_large else tar.extractfile(member)
    data = fh.read(member.size + 1) if fh is not None else b""
    if not too_large and len(data) != member.size:
        raise EOFError(f"member data ends after {len(data)} of {member.size} bytes")
    return data


def _member_key(member: tarfile.TarInfo, name: str, path: str) -> tuple[str, str] | Rejection:
    """(key, extension) of a member that may belong to a sample, or why it cannot."""
    if not member.isreg():
        return Rejection(name, path, Reason.NOT_REGULAR_FILE, f"tar type {member.type!r}", member.offset)
    match = _SPLIT.match(member.name)  # keys keep their raw bytes until checked
    if match is None:
        return Rejection(name, path, Reason.UNKNOWN_MEMBER, "no extension", member.offset)
    key, ext = match.group(1), match.group(2)
    if ext.lower() in UNSAFE_EXTS:
        return Rejection(name, path, Reason.UNSAFE_MEMBER, f".{ext} is never unpickled", member.offset)
    return key, ext


def _missing_end_marker(path: str, offset: int) -> str | None:
    """tarfile reads a header cut short, or no end marker, as a normal end of archive: check ourselves
    that an uncompressed shard ends with a zero block where the last member ends."""
    with storage.open_binary(path) as fh:
        magic = fh.read(6)
        if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00":
            return None  # compressed: the decompressor itself raises on a truncated stream
        fh.seek(offset)
        tail = fh.read(512)
    if len(tail) < 512 or tail.count(0) != 512:
        return f"no end-of-archive block at byte {offset} ({len(tail)} bytes follow)"
    return None


def read_shards(
    spec: str | Iterable[str], limits: Limits | None = None, captions: CaptionSource | None = None
) -> Iterator[Item]:
    """Read every shard matched by ``spec`` (paths, brace patterns, or a folder of .tar files)."""
    urls = expand_urls(spec)
    if not urls:
        raise FileNotFoundError(f"no shards match {spec!r}")
    registry = KeyRegistry()
    for url in urls:
        for item in read_tar(url, limits, captions):
            yield registry.admit(item)


def folder_samples(stem: str, files: dict[str, Path]) -> list[tuple[str, dict[str, Path]]]:
    """The samples of the files sharing one stem: one, keyed by the stem, when it has at most one image;
    else one per image file (``cat.jpg`` and ``cat.png``; ``dog.png`` and ``dog.PNG``), keyed by the stem
    and the extension, each with the stem's caption files, so no image stands in for another."""
    key = stem.replace("/", "__").replace(".", "_")
    images = [ext for ext in files if ext.lower() in IMAGE_EXTS]
    if len(images) <= 1:
        return [(key, files)]
    shared = {ext: path for ext, path in files.items() if ext.lower() not in IMAGE_EXTS}
    return [(f"{key}_{ext}", {ext: files[ext], **shared}) for ext in images]


def _read_folder_members(group: _Group, files: dict[str, Path], limits: Limits) -> None:
    for ext, path in files.items():
        try:
            size = path.stat().st_size
            if size > limits.max_member_bytes:
                group.problem = (Reason.TOO_LARGE, f"{path.name}: {size} bytes > {limits.max_member_bytes}")
                group.members[ext] = b""
                continue
            with storage.open_regular(path) as fh:  # swapped for a pipe since the walk: never blocks
                group.members[ext] = fh.read()
        except OSError as err:
            group.problem = (Reason.UNREADABLE, f"{printable(path.name)}: {err.strerror or err}")
            group.members[ext] = b""


def read_folder(
    root: str | os.PathLike[str], limits: Limits | None = None, captions: CaptionSource | None = None
) -> Iterator[Item]:
    """Read an image folder where ``a/b/cat.jpg`` has its caption in ``a/b/cat.txt`` (and optional .json),
    or in a Hugging Face imagefolder ``metadata.jsonl`` / ``metadata.csv`` row (``file_name``, ``text``).

    The key is the relative path without extension, with ``/`` and ``.`` replaced so it is a valid
    webdataset key; keys that collide after that become ``duplicate_key`` rejections. A folder or file
    that cannot be read is a row (``unreadable``), never skipped; so is a metadata line that cannot be
    used, or one naming an image that is not there.
    """
    limits = limits or Limits()
    captions = captions or CaptionSource()
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder not found: {root}")
    groups: dict[str, dict[str, Path]] = {}
    order: list[str] = []
    unreadable_dirs: list[OSError] = []
    paths: list[Path] = []
    for folder, dirs, files in os.walk(root, onerror=unreadable_dirs.append):
        dirs.sort()
        here = Path(folder)
        # Links to folders are not followed (os.walk lists them as folders): record them as files are.
        paths.extend(here / d for d in dirs if (here / d).is_symlink())
        paths.extend(here / f for f in files)
    for err in unreadable_dirs:
        rel = printable(os.path.relpath(str(err.filename), root))
        yield Rejection(rel, str(root), Reason.UNREADABLE, f"folder: {err.strerror}")
    metadata = folder_metadata(root, paths)
    yield from metadata.problems
    for path in sorted(set(paths) - set(metadata.files)):
        rel = printable(path.relative_to(root).as_posix())
        if path.is_symlink() or not path.is_file():
            yield Rejection(rel, str(root), Reason.NOT_REGULAR_FILE, "symlink or special file")
            continue
        stem, _, ext = path.relative_to(root).as_posix().rpartition(".")
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
        for key, members in folder_samples(stem, groups[stem]):
            group = _Group(key, -1)
            rows = [metadata.rows.pop(f"{stem}.{ext}") for ext in members if f"{stem}.{ext}" in metadata.rows]
            group.extra = rows[0] if rows else None
            _read_folder_members(group, members, limits)
            yield registry.admit(_group_to_item(group, printable(str(root / stem)), limits, captions=captions))
    yield from metadata.leftovers(root)
