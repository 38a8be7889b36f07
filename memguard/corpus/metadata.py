"""Captions and metadata from the files curators have, besides a webdataset ``.txt`` member:

- a ``.json`` member's field (``caption`` or ``text``, or the one ``corpus.caption_field`` names);
- img2dataset's per-shard parquet beside each tar (``00000.parquet`` beside ``00000.tar``: ``key``,
  ``caption``, ``url``, ``status``, ``error_message``, ...), joined by key; rows img2dataset failed to
  download are manifest rows (``not_downloaded``, with its status and error message in ``detail``);
- the Hugging Face imagefolder layout: ``metadata.jsonl`` / ``metadata.csv`` (any folder of the tree)
  with ``file_name`` relative to that file's folder and the caption in ``text`` (or ``caption_field``).

Every line or row that cannot be used becomes a rejection row, never a silent drop.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from memguard.common import storage
from memguard.corpus.sample import Reason, Rejection

CAPTION_FIELDS = ("caption", "text")  # img2dataset writes ``caption``; Hugging Face imagefolder ``text``
IMAGEFOLDER_FILES = ("metadata.jsonl", "metadata.csv")
IMG2DATASET_SUCCESS = "success"


@dataclass(frozen=True)
class CaptionSource:
    """Where a sample's caption comes from.

    field: None → the ``.txt`` member, else the metadata's ``caption`` or ``text``; a name → that metadata
    field only (``.txt`` members are then ignored). required: false for image-only dedup — a sample
    without a usable caption is read with an empty one instead of being rejected.
    """

    field: str | None = None
    required: bool = True


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """Metadata values as JSON can hold them (they travel into the cleaned shards' ``.json``): NaN → None,
    bytes and other objects → their text."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif value is not None and not isinstance(value, str | int | float | bool | list | dict):
            value = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
        out[str(name)] = value
    return out


def caption_from_meta(meta: dict[str, Any], source: CaptionSource) -> tuple[str | None, str]:
    """(caption text or None, which field held it / why none): a field that exists but holds no text is
    reported, not skipped."""
    names = (source.field,) if source.field else CAPTION_FIELDS
    for name in names:
        if name in meta and meta[name] is not None:
            value = meta[name]
            if not isinstance(value, str):
                return None, f"metadata field {name!r} holds {type(value).__name__}, not text"
            return value, name
    return None, f"no metadata field {' or '.join(repr(n) for n in names)}"


@dataclass
class ShardMetadata:
    """img2dataset's parquet rows of one shard, by key, and the rejections reading it produced."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Rejection] = field(default_factory=list)
    file: str | None = None

    def take(self, key: str) -> dict[str, Any] | None:
        return self.rows.pop(key, None)

    def leftovers(self, shard: str) -> list[Rejection]:
        """Rows never matched by a sample in the shard: failed downloads, or successes missing from the tar."""
        out = []
        for key, row in self.rows.items():
            status = str(row.get("status") or "")
            if status and status != IMG2DATASET_SUCCESS:
                error = row.get("error_message") or ""
                detail = f"img2dataset status={status}" + (f": {error}" if error else "")
                out.append(Rejection(key, shard, Reason.NOT_DOWNLOADED, detail))
            else:
                detail = f"listed in {Path(self.file or '').name} but not in the shard"
                out.append(Rejection(key, shard, Reason.INCOMPLETE_SAMPLE, detail))
        self.rows = {}
        return out


SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")  # any case


def sibling_parquet(shard: str) -> str:
    """``.../00000.tar`` (or ``.tar.gz`` …) → ``.../00000.parquet``, img2dataset's metadata file name. Only
    the shard suffix is replaced, so ``a.x.tar`` and ``a.y.tar`` each have their own (``a.x.parquet``)."""
    head, _, name = shard.rpartition("/")
    suffix = next((s for s in SHARD_SUFFIXES if name.lower().endswith(s)), "")
    stem = name[: len(name) - len(suffix)] if suffix else name.rsplit(".", 1)[0]
    return f"{head}/{stem}.parquet" if head else f"{stem}.parquet"


def shard_metadata(shard: str) -> ShardMetadata:
    """The parquet beside ``shard`` if there is one; a parquet we cannot read is a rejection row."""
    path = sibling_parquet(shard)
    found = ShardMetadata(file=path)
    try:
        if not storage.exists(path):
            return ShardMetadata()
        with storage.open_binary(path) as fh:
            table = pq.read_table(io.BytesIO(fh.read()))
    except storage.NotRegularFile as err:
        found.problems.append(Rejection("", path, Reason.NOT_REGULAR_FILE, f"sidecar: {err.strerror}"))
        return found
    except Exception as err:  # a corrupt sidecar must not crash the run: one row says so
        found.problems.append(Rejection("", path, Reason.BAD_META, f"{type(err).__name__}: {err}"))
        return found
    if "key" not in table.column_names:
        found.problems.append(Rejection("", path, Reason.BAD_META, f"no 'key' column (has {table.column_names})"))
        return found
    for row in table.to_pylist():
        key = row.pop("key")
        if not isinstance(key, str) or not key:
            found.problems.append(Rejection("", path, Reason.BAD_META, f"row with key {key!r}"))
        elif key in found.rows:
            found.problems.append(Rejection(key, path, Reason.BAD_META, "key listed twice"))
        else:
            found.rows[key] = json_safe(row)
    return found


@dataclass
class FolderMetadata:
    """Imagefolder metadata rows by image path relative to the corpus root, and rejected lines."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # image → "metadata.jsonl:<line>"
    problems: list[Rejection] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def leftovers(self, root: Path) -> list[Rejection]:
        """Rows naming an image that is not in the folder."""
        out = [
            Rejection(
                self.origin[image], str(root), Reason.INCOMPLETE_SAMPLE, f"names {image}, which is not in the folder"
            )
            for image in self.rows
        ]
        self.rows = {}
        return out


def _read_records(path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    """(line number, record or why it is unusable) for every data line of a metadata.jsonl / .csv."""
    with storage.open_regular(path) as fh:
        text = fh.read().decode("utf-8-sig")
    out: list[tuple[int, dict[str, Any] | str]] = []
    if path.name.endswith(".csv"):
        for number, record in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            out.append((number, dict(record)))
        return out
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            loaded = json.loads(line)
        except json.JSONDecodeError as err:
            out.append((number, f"not JSON: {err}"))
            continue
        out.append((number, loaded if isinstance(loaded, dict) else f"a JSON {type(loaded).__name__}, not an object"))
    return out


def folder_metadata(root: Path, files: list[Path]) -> FolderMetadata:
    """Read every ``metadata.jsonl`` / ``metadata.csv`` among ``files``; ``file_name`` is relative to the
    metadata file's folder (as in Hugging Face's imagefolder)."""
    found = FolderMetadata()
    for path in files:
        if path.name not in IMAGEFOLDER_FILES or path.is_symlink():
            continue
        found.files.append(path)
        rel_file = path.relative_to(root).as_posix()
        try:
            records = _read_records(path)
        except storage.NotRegularFile as err:
            found.problems.append(Rejection(rel_file, str(root), Reason.NOT_REGULAR_FILE, f"metadata: {err.strerror}"))
            continue
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            found.problems.append(Rejection(rel_file, str(root), Reason.BAD_META, f"{type(err).__name__}: {err}"))
            continue
        for number, record in records:
            where = f"{rel_file}:{number}"
            if isinstance(record, str):
                found.problems.append(Rejection(where, str(root), Reason.BAD_META, record))
                continue
            name = record.pop("file_name", None)
            if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
                found.problems.append(Rejection(where, str(root), Reason.BAD_META, f"file_name {name!r}"))
                continue
            image = (path.parent / name).relative_to(root).as_posix()
            if image in found.rows:
                found.problems.append(Rejection(where, str(root), Reason.BAD_META, f"{image} listed twice"))
                continue
            found.rows[image] = json_safe(record)
            found.origin[image] = where
    return found
