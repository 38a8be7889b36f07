"""Corpora that are only vectors and metadata: the embedding layout clip-retrieval and img2dataset write,
and in which LAION-5B publishes its image embeddings.

```
<root>/img_emb/img_emb_<n>.npy            (rows, dim) float16 or float32: row i is metadata row i's image
<root>/metadata/metadata_<n>.parquet      one row per vector: the corpus's id, the caption, anything else
```

Parts are the numbered pairs in numeric order (``img_emb_2`` before ``img_emb_10``). The id column is
``corpus.id_column``, or the first of ``key``, ``uid``, ``url``, ``image_path`` the metadata has; it becomes
each sample's key, so the manifest and the removal list join back to the curator's own tables by it.
The caption is ``corpus.caption_field``, or ``caption`` / ``text``.

A part whose two files disagree in length, a row without an id or a caption, a repeated id, a vector
file that cannot be read or is not a 2-d float array (its rows rejected as ``shard_unreadable``), a
metadata file that cannot be read (one row for the part, as an unreadable shard): each is a rejection
row of the manifest, never a silent drop. A vector file without its metadata (or the other way round)
is a clear error before any work: the run cannot say which samples such a file holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memguard.common import storage
from memguard.common.config import ConfigError, RunError

VECTORS_FOLDER, METADATA_FOLDER = "img_emb", "metadata"
VECTORS_PREFIX, METADATA_PREFIX = "img_emb_", "metadata_"
ID_COLUMNS = ("key", "uid", "url", "image_path")  # the ids curators' tables carry, in order of preference
VECTOR_DTYPES = ("float16", "float32", "float64")
_NUMBERED = re.compile(r"^(?:img_emb|metadata)_(\d+)\.(?:npy|parquet)$")


class EmbeddingLayoutError(RunError):
    """The embedding corpus's files do not form the layout (an orphan file, a vector file of the wrong shape):
    one line and exit 1 from the entry points; inside a part, its rows' rejection detail."""


@dataclass(frozen=True)
class EmbeddingPart:
    """One numbered pair: the vector file and its metadata file."""

    vectors: str
    metadata: str


def _join(root: str, *names: str) -> str:
    return "/".join([root.rstrip("/"), *names])


def _listing(folder: str) -> list[str]:
    """The file names directly in ``folder`` (local or remote); none if it does not exist."""
    if storage.is_remote(folder):
        fs, path = storage.filesystem(folder)
        fs.invalidate_cache()
        return sorted(Path(p).name for p in fs.ls(path, detail=False)) if fs.isdir(path) else []
    local = Path(storage.local_path(folder))
    return sorted(p.name for p in local.iterdir() if p.is_file()) if local.is_dir() else []


def _numbered(names: list[str], prefix: str, suffix: str) -> dict[int, str]:
    found = {}
    for name in names:
        match = _NUMBERED.match(name)
        if match and name.startswith(prefix) and name.endswith(suffix):
            found[int(match.group(1))] = name
    return found


def metadata_of(vectors: str) -> str:
    """``<root>/img_emb/img_emb_7.npy`` → ``<root>/metadata/metadata_7.parquet``."""
    head, _, name = vectors.rpartition("/")
    root = head.rpartition("/")[0]
    number = _NUMBERED.match(name)
    if number is None:
        raise EmbeddingLayoutError(f"{storage.redact(vectors)} is not an img_emb_<n>.npy file")
    return _join(root, METADATA_FOLDER, f"{METADATA_PREFIX}{number.group(1)}.parquet")


def embedding_parts(root: str) -> list[EmbeddingPart]:
    """The numbered (vectors, metadata) pairs under ``root``, in numeric order."""
    vectors = _numbered(_listing(_join(root, VECTORS_FOLDER)), VECTORS_PREFIX, ".npy")
    metadata = _numbered(_listing(_join(root, METADATA_FOLDER)), METADATA_PREFIX, ".parquet")
    if not vectors and not metadata:
        raise FileNotFoundError(
            f"no embedding corpus at {storage.redact(root)}: expected {VECTORS_FOLDER}/{VECTORS_PREFIX}<n>.npy and "
            f"{METADATA_FOLDER}/{METADATA_PREFIX}<n>.parquet (the clip-retrieval / img2dataset layout)"
        )
    orphans = sorted(set(vectors) ^ set(metadata))
    if orphans:
        named = [vectors.get(n) or metadata[n] for n in orphans[:5]]
        raise EmbeddingLayoutError(
            f"{storage.redact(root)}: {', '.join(named)} without {'its metadata' if orphans[0] in vectors else 'its vectors'}"
            " (every img_emb_<n>.npy needs metadata/metadata_<n>.parquet, and the other way round)"
        )
    return [
        EmbeddingPart(_join(root, VECTORS_FOLDER, vectors[n]), _join(root, METADATA_FOLDER, metadata[n]))
        for n in sorted(vectors)
    ]


def part_identity(vectors: str) -> list[object]:
    """A part's size and modification time (or ETag): its vector file's and its metadata's."""
    return [storage.stat_key(vectors), storage.stat_key(metadata_of(vectors))]


def open_vectors(vectors: str) -> np.ndarray:
    """The vector file as a (rows, dim) float array, memory-mapped where local (never unpickled)."""
    try:
        if storage.is_remote(vectors):
            with storage.open_binary(vectors) as fh:
                array = np.load(fh, allow_pickle=False)
        else:
            array = np.load(storage.local_path(vectors), mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # not a .npy file, truncated, an object array (needs pickle)
        raise EmbeddingLayoutError(f"{storage.redact(vectors)}: not a readable .npy array ({err})") from None
    if array.ndim != 2 or array.dtype.name not in VECTOR_DTYPES or array.shape[1] < 1:
        raise EmbeddingLayoutError(
            f"{storage.redact(vectors)}: expected a 2-d {'/'.join(VECTOR_DTYPES)} array, got {array.dtype} {array.shape}"
        )
    return array


def metadata_columns(metadata: str) -> list[str]:
    with storage.open_binary(metadata) as fh:
        return list(pq.ParquetFile(fh).schema_arrow.names)


def id_column_of(columns: list[str], configured: str | None, *, where: str) -> str:
    """The configured id column (which must exist), else the first of ``ID_COLUMNS`` the metadata has."""
    if configured is not None:
        if configured not in columns:
            raise ConfigError(f"corpus.id_column={configured!r}: {where} has no such column (it has {columns})")
        return configured
    for name in ID_COLUMNS:
        if name in columns:
            return name
    raise ConfigError(f"{where} has none of the id columns {ID_COLUMNS}: set corpus.id_column (columns: {columns})")


def read_metadata(metadata: str, names: list[str]) -> pa.Table:
    """The ``names`` columns of a metadata file that it has (the others are absent from the table)."""
    with storage.open_binary(metadata) as fh:
        parquet = pq.ParquetFile(fh)
        present = [n for n in names if n in parquet.schema_arrow.names]
        return parquet.read(columns=present)


def vector_blocks(vectors: np.ndarray, rows: np.ndarray, *, block: int = 65_536) -> Iterator[np.ndarray]:
    """The chosen rows of a (memory-mapped) vector array as float32, a block at a time."""
    for lo in range(0, len(rows), block):
        yield np.asarray(vectors[rows[lo : lo + block]], dtype=np.float32)


def as_text(value: Any) -> str | None:
    """An id value as text (numbers too: ``uid`` columns are often integers); None or empty → None."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    return text if text.strip() else None
