"""The curator's own image embeddings for an image corpus (``dedup.image.embeddings=<folder>``): the
vectors of the clip-retrieval / img2dataset embedding layout (``memguard/corpus/embeddings.py``) stand
in for our embedder's, joined to the samples by key.

The driver builds a lookup once per embedding corpus (a cache entry): every metadata row's id hashed to
64 bits, sorted, with the part and row of its vector — 20 bytes an id, memory-mapped by each map worker,
which finds its shard's keys by binary search and reads their vectors from the memory-mapped vector
files. An id that two rows share (or whose hash another id shares) has no single vector: its samples are
``no_embedding`` rows, as are samples whose key the metadata does not have. Why by hand: no kept library
joins 10^8 string ids to rows out of core; a sorted hash array is the textbook way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memguard.common.cache import Cache, entry_key
from memguard.common.config import ConfigError
from memguard.common.mapped import load_mapped
from memguard.corpus.embeddings import embedding_parts, metadata_columns, open_vectors, part_identity, read_metadata
from memguard.dedup.signals.embed import l2_normalise

JOIN_COLUMNS = ("key", "image_path")  # the columns clip-retrieval and img2dataset write a sample's key in


def id_hash(ids: list[str]) -> np.ndarray:
    """A stable 64-bit hash of each id (the same in every process; Python's ``hash`` is salted)."""
    return np.array([int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") for i in ids],
                    dtype=np.uint64)  # fmt: skip


def join_column(columns: list[str], configured: str | None, *, where: str) -> str:
    if configured is not None:
        if configured not in columns:
            raise ConfigError(f"dedup.image.embeddings_id={configured!r}: {where} has no such column ({columns})")
        return configured
    found = next((c for c in JOIN_COLUMNS if c in columns), None)
    if found is None:
        raise ConfigError(f"{where} has neither of {JOIN_COLUMNS}: set dedup.image.embeddings_id (columns: {columns})")
    return found


def build_lookup(root: str, join: str | None, *, folder: Path) -> None:
    """Write the lookup of the embedding corpus at ``root`` into ``folder`` (``hashes``, ``parts``,
    ``rows`` sorted by hash; ``files.json``: the vector files and their width)."""
    parts = embedding_parts(root)
    column = join_column(metadata_columns(parts[0].metadata), join, where=parts[0].metadata)
    hashes, part_of, row_of, widths = [], [], [], []
    for p, part in enumerate(parts):
        ids = read_metadata(part.metadata, [column]).column(column).to_pylist()
        vectors = open_vectors(part.vectors)
        widths.append(int(vectors.shape[1]))
        usable = [i for i in range(min(len(ids), len(vectors))) if ids[i] is not None]  # rows with both
        hashes.append(id_hash([str(ids[i]) for i in usable]))
        part_of.append(np.full(len(usable), p, np.int32))
        row_of.append(np.asarray(usable, np.int64))
    if len(set(widths)) > 1:
        raise ConfigError(f"dedup.image.embeddings: vector files of different widths {sorted(set(widths))}")
    h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    order = np.argsort(h, kind="stable")
    h, part_sorted, row_sorted = h[order], np.concatenate(part_of)[order], np.concatenate(row_of)[order]
    shared = np.zeros(len(h), bool)  # an id on two rows, or two ids on one hash: no single vector
    same = h[1:] == h[:-1]
    shared[1:] |= same
    shared[:-1] |= same
    part_sorted[shared] = -1
    np.save(folder / "hashes.npy", h, allow_pickle=False)
    np.save(folder / "parts.npy", part_sorted, allow_pickle=False)
    np.save(folder / "rows.npy", row_sorted, allow_pickle=False)
    (folder / "files.json").write_text(json.dumps({"vectors": [p.vectors for p in parts], "width": widths[0],
                                                   "column": column}))  # fmt: skip


@dataclass(frozen=True)
class BuiltLookup:
    """A lookup's cache entry: its key (part of each map entry's) and its folder (what workers open)."""

    key: str
    folder: str


def cached_lookup(cache: Cache, root: str, join: str | None) -> BuiltLookup:
    """The lookup of the embedding corpus at ``root``, built once: keyed by its files' sizes and
    modification times (or ETags) and the join column."""
    identities = [part_identity(part.vectors) for part in embedding_parts(root)]
    key = entry_key("embedding_lookup", identities, join)
    folder = cache.get("embedding_lookup", key, lambda out: build_lookup(root, join, folder=out))
    return BuiltLookup(key, str(folder))


@dataclass
class Lookup:
    """A built lookup, opened in a worker: which keys have one vector, and those vectors."""

    folder: Path
    hashes: np.ndarray = field(init=False)
    parts: np.ndarray = field(init=False)
    rows: np.ndarray = field(init=False)
    files: list[str] = field(init=False)
    width: int = field(init=False)
    _open: dict[int, np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.hashes = load_mapped(self.folder / "hashes.npy")
        self.parts = load_mapped(self.folder / "parts.npy")
        self.rows = load_mapped(self.folder / "rows.npy")
        described = json.loads((self.folder / "files.json").read_text())
        self.files, self.width = described["vectors"], int(described["width"])

    def where(self, key: str) -> tuple[int, int] | None:
        """The (part, row) of the key's one vector; None if it has none, or several."""
        h = id_hash([key])[0]
        at = int(np.searchsorted(self.hashes, h))
        if at >= len(self.hashes) or self.hashes[at] != h or self.parts[at] < 0:
            return None
        return int(self.parts[at]), int(self.rows[at])

    def vectors(self, places: list[tuple[int, int]]) -> np.ndarray:
        """The vectors at ``places``, as float32 rows of unit norm (a zero vector stays non-finite)."""
        out = np.empty((len(places), self.width), np.float32)
        for i, (part, row) in enumerate(places):
            if part not in self._open:
                self._open[part] = open_vectors(self.files[part])
            out[i] = self._open[part][row]
        return l2_normalise(out) if len(out) else out
