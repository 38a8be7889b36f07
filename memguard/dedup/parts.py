"""A corpus's parts (its shards, or one image folder): which they are, what identifies each, and how one
is read — the same way by the map stage and by the apply stage's second read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from memguard.common import storage
from memguard.corpus.discover import find_shards
from memguard.corpus.embeddings import embedding_parts
from memguard.corpus.metadata import CaptionSource
from memguard.corpus.readers import Item, KeyRegistry, read_folder, read_tar
from memguard.corpus.spec import Corpus, part_identity
from memguard.corpus.validate import Limits


@dataclass(frozen=True)
class Layout:
    """The parts of a corpus in order, and how many unit rows each has (consecutive in ``units``)."""

    kind: str  # shards | folder | embeddings
    parts: list[str]
    rows: list[int]
    sizes: list[int] | None  # bytes of each part (shards), None where unknown (a folder)
    identities: list[object]  # each part as the map stage read it (``part_identity``)


def corpus_parts(corpus: Corpus) -> tuple[str, list[str], list[object]]:
    """(kind, parts, identities): the corpus's parts in order and each one's identity (a stat: no read).
    An embedding corpus's part is its vector file (its metadata file is found beside it)."""
    kind = corpus.kind if corpus.kind in ("folder", "embeddings") else "shards"
    if kind == "embeddings":
        parts = [part.vectors for part in embedding_parts(corpus.location)]
    else:
        parts = [corpus.location] if kind == "folder" else find_shards(corpus.location)[0]
    if not parts:
        raise FileNotFoundError(f"no shards match {storage.redact(corpus.location)!r}")
    return kind, parts, [part_identity(kind, p) for p in parts]


def read_part(kind: str, part: str, limits: Limits, *, captions: CaptionSource) -> Iterator[Item]:
    """One part's items, exactly as the map stage saw them (the apply stage reads them again)."""
    if kind == "folder":
        return read_folder(part, limits, captions)
    registry = KeyRegistry()  # repeats inside the shard; repeats across shards are found when joining
    return (registry.admit(item) for item in read_tar(part, limits, captions))
