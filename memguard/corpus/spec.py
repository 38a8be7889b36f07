"""Which corpus to read: webdataset shards, an image folder, or the built-in Twemoji corpus."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from memguard.common import storage
from memguard.common.cache import fingerprint
from memguard.common.config import ConfigError, OutputInsideInput, RunError
from memguard.corpus.discover import find_shards, is_shard
from memguard.corpus.embeddings import embedding_parts, id_column_of, metadata_columns
from memguard.corpus.embeddings import part_identity as embedding_identity
from memguard.corpus.metadata import CaptionSource, sibling_parquet
from memguard.corpus.readers import Item, read_folder, read_shards
from memguard.corpus.twemoji import TwemojiConfig, build_twemoji
from memguard.corpus.validate import Limits


@dataclass(frozen=True)
class CorpusSpec:
    """kind: ``shards`` (path = folder, file, brace pattern or glob; local or ``s3://``/``gs://``/``hf://``
    through fsspec), ``folder`` (local; ``.txt`` sidecars or a Hugging Face ``metadata.jsonl``/``.csv``),
    ``embeddings`` (path = a folder, local or remote, of ``img_emb/img_emb_<n>.npy`` vectors and
    ``metadata/metadata_<n>.parquet``: a corpus of precomputed image embeddings and captions, no images;
    memguard/corpus/embeddings.py) or ``twemoji``.

    id_column: an embedding corpus's id column (its values are the samples' keys and the removal list's
    ids); null → the first of ``key``, ``uid``, ``url``, ``image_path`` its metadata has. Image corpora's
    keys are their ``key`` (the webdataset member stem, img2dataset's ``key`` column).

    caption_field: null → the ``.txt`` member, else the metadata's ``caption`` or ``text`` (a ``.json``
    member, img2dataset's parquet beside the shard, or the imagefolder metadata file); a name → that
    metadata field only.

    ground_truth: optional parquet of injected copies (key, origin, natural_group), for evaluation only.
    heldout: optional shards never trained on (membership inference).
    """

    kind: Literal["shards", "folder", "embeddings", "twemoji"] = "twemoji"
    path: str | None = None
    id_column: str | None = None
    ground_truth: str | None = None
    heldout: str | None = None
    caption_field: str | None = None
    twemoji: TwemojiConfig = field(default_factory=TwemojiConfig)

    def __post_init__(self) -> None:
        if self.caption_field is not None and not self.caption_field.strip():
            raise ConfigError("corpus.caption_field must name a metadata field, or be null for the .txt member")
        if self.id_column is not None and (self.kind != "embeddings" or not self.id_column.strip()):
            raise ConfigError("corpus.id_column names a metadata column of corpus=embeddings (images are keyed by key)")


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """An opened corpus: a re-iterable reader plus what identifies its content."""

    kind: str
    location: str
    fingerprint: str
    ground_truth: Path | None
    heldout: str | None
    info: dict[str, object]
    limits: Limits
    captions: CaptionSource = field(default_factory=CaptionSource)
    id_column: str | None = None  # an embedding corpus's id column (None for image corpora: ``key``)

    def items(self) -> Iterator[Item]:
        if self.kind == "embeddings":
            raise RunError(f"{storage.redact(self.location)} is an embedding corpus: it has no images to read")
        if self.kind == "folder":
            return read_folder(self.location, self.limits, self.captions)
        return read_shards(self.location, self.limits, self.captions)


def file_identity(path: str) -> list[object]:
    """Size + mtime (an object's ETag), as make does: cheap for terabyte corpora, and a changed file changes
    its stat. A shard's img2dataset parquet is part of what it reads."""
    sidecar = sibling_parquet(path) if is_shard(path) else None
    return [storage.stat_key(path), storage.stat_key(sidecar) if sidecar and storage.exists(sidecar) else None]


def _stat_fingerprint(paths: list[str]) -> str:
    return fingerprint([file_identity(p) for p in paths])


def _folder_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


def scanned_folders(spec: CorpusSpec) -> list[Path]:
    """The local folders a corpus reads everything under (a folder corpus; a shard path that is a folder),
    resolved (links followed)."""
    found = []
    for path in (spec.path, spec.heldout):
        if spec.kind in ("folder", "shards", "embeddings") and path and not storage.is_remote(path):
            local = Path(storage.local_path(path))
            if local.is_dir():
                found.append(local.resolve())
    return found


def check_outside_input(spec: CorpusSpec, **places: str | os.PathLike[str]) -> None:
    """Refuse an output or cache folder (``output=…``, ``cache_dir=…``) that is, or lies inside, a folder the
    corpus is read from: the next run would read it back as input, and this one would change its input
    while reading it. Paths are compared resolved, so a link into the input is caught too."""
    for root in scanned_folders(spec):
        for name, place in places.items():
            if storage.is_remote(place):
                continue
            target = Path(place).resolve()
            if target.is_relative_to(root):
                raise OutputInsideInput(
                    f"{name}={place} is inside the input folder {root}: it would be read as input; "
                    f"choose a {name} outside it (run from another folder, or set output= and cache_dir=)",
                    str(root),
                )


class InputChanged(RunError):
    """A part of the corpus is not what the map stage read: the run stops before committing anything."""


def part_identity(kind: str, part: str) -> object:
    """What the map stage's cache key and the apply stage's check hold a part to: a shard's size and
    modification time (and its sidecar's), every file's of a folder, an embedding part's two files'."""
    if kind == "embeddings":
        return embedding_identity(part)
    return _stat_fingerprint(_folder_files(Path(part))) if kind == "folder" else file_identity(part)


def check_unchanged(kind: str, part: str, identity: object) -> None:
    if part_identity(kind, part) != identity:
        raise InputChanged(f"{storage.redact(part)} changed since it was mapped (size or modification time); rerun")


def open_corpus(spec: CorpusSpec, cache_dir: str | os.PathLike[str], limits: Limits | None = None) -> Corpus:
    limits = limits or Limits()
    if spec.kind == "twemoji":
        built = build_twemoji(spec.twemoji, Path(cache_dir) / "corpus")
        return Corpus(
            kind="shards",
            location=str(built.train),
            fingerprint=f"twemoji-{spec.twemoji.fingerprint()}",
            ground_truth=built.ground_truth,
            heldout=str(built.heldout),
            info=built.info,
            limits=limits,
        )
    if not spec.path:
        raise ConfigError(f"corpus.path is required for corpus={spec.kind}")
    gt = Path(spec.ground_truth) if spec.ground_truth else None
    captions = CaptionSource(field=spec.caption_field)
    if spec.kind == "folder":
        if storage.is_remote(spec.path):
            raise ConfigError(f"corpus=folder reads a local folder; for {storage.redact(spec.path)} use corpus=shards")
        root = Path(storage.local_path(spec.path))
        if not root.is_dir():
            raise NotADirectoryError(f"image folder not found: {root}")
        return Corpus(
            kind="folder",
            location=str(root),
            fingerprint=_stat_fingerprint(_folder_files(root)),
            ground_truth=gt,
            heldout=spec.heldout,
            info={},
            limits=limits,
            captions=captions,
        )
    if spec.kind == "embeddings":
        parts = embedding_parts(spec.path)
        return Corpus(
            kind="embeddings",
            location=spec.path,
            fingerprint=fingerprint([embedding_identity(part.vectors) for part in parts]),
            ground_truth=gt,
            heldout=None,
            info={"parts": len(parts)},
            limits=limits,
            captions=captions,
            # Resolved once, from the first part: every part's rows are keyed by the same column.
            id_column=id_column_of(metadata_columns(parts[0].metadata), spec.id_column, where=storage.redact(parts[0].metadata)),
        )
    if spec.kind == "shards":
        found, skipped = find_shards(spec.path)
        missing = [storage.redact(u) for u in found if not storage.exists(u)]
        if not found or missing:
            raise FileNotFoundError(
                f"shards not found for {storage.redact(spec.path)!r}: {missing[:5] or 'none matched'}"
            )
        return Corpus(
            kind="shards",
            location=spec.path,
            fingerprint=_stat_fingerprint(found),
            ground_truth=gt,
            heldout=spec.heldout,
            info={"skipped_inputs": skipped} if skipped else {},
            limits=limits,
            captions=captions,
        )
    raise ConfigError(f"corpus.kind must be one of shards, folder, embeddings, twemoji; got {spec.kind!r}")
