"""Every expensive dedup step, each a function from its inputs to arrays or a folder of outputs; the
pipeline (``dedup.pipeline``) caches each one under a key of its inputs and parameters.

``ingest`` reads every input unit once, validates it, hashes its pixels and normalises its caption, and
writes ``units.parquet``: one row per input unit in input order. Valid samples get a dense
``sample_index`` that the later steps (signatures, embeddings) use as their row number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from common.atomic import write_table
from dedup.io.corpus import Corpus
from dedup.io.readers import printable
from dedup.io.sample import Rejection, Sample
from dedup.io.validate import Invalid, decode_image
from dedup.signals.embed import EmbedderParams, make_embedder
from dedup.signals.minhash import MinHasher, MinHashParams
from dedup.signals.neighbors import IndexParams, finite_rows, neighbor_pairs
from dedup.signals.normalize import normalize_caption

UNITS_FILE = "units.parquet"


def pixel_hash(rgb: np.ndarray) -> str:
    """Exact-duplicate hash of decoded pixels (so a PNG and a lossless WebP of one image agree)."""
    digest = hashlib.sha1(np.ascontiguousarray(rgb).tobytes(), usedforsecurity=False)
    digest.update(str(rgb.shape).encode())
    return digest.hexdigest()


def ingest(corpus: Corpus, folder: Path) -> None:
    columns: dict[str, list[object]] = {
        k: []
        for k in (
            "unit",
            "key",
            "source",
            "offset",
            "status",
            "reason",
            "detail",
            "caption",
            "caption_norm",
            "image_ext",
            "width",
            "height",
            "pixel_hash",
            "sample_index",
        )
    }
    n_valid = 0

    def add(**row: object) -> None:
        for name, values in columns.items():
            value = row.get(name)
            # Names and error texts may carry bytes that are not UTF-8 (surrogate escapes): pyarrow refuses them.
            values.append(printable(value) if isinstance(value, str) else value)

    def reject(
        unit: int, item: Sample | Rejection, *, offset: int, reason: str, detail: str, caption: str | None = None
    ) -> None:
        add(
            unit=unit,
            key=item.key,
            source=item.source,
            offset=offset,
            status="rejected",
            reason=reason,
            detail=detail[:500],
            caption=caption,
            sample_index=-1,
        )

    for unit, item in enumerate(tqdm(corpus.items(), desc="ingest", unit="unit", mininterval=1.0)):
        if isinstance(item, Rejection):
            reject(unit, item, offset=item.offset, reason=str(item.reason), detail=item.detail)
            continue
        try:
            rgb = decode_image(item.image, corpus.limits)
        except Invalid as err:
            reject(unit, item, offset=-1, reason=str(err.reason), detail=err.detail, caption=item.caption)
            continue
        add(
            unit=unit,
            key=item.key,
            source=item.source,
            offset=-1,
            status="valid",
            reason="",
            detail="",
            caption=item.caption,
            caption_norm=normalize_caption(item.caption),
            image_ext=item.image_ext,
            width=rgb.shape[1],
            height=rgb.shape[0],
            pixel_hash=pixel_hash(rgb),
            sample_index=n_valid,
        )
        n_valid += 1
    write_table(folder / UNITS_FILE, pa.table(columns))


def read_units(folder: Path) -> pa.Table:
    return pq.read_table(folder / UNITS_FILE)


def valid_samples(corpus: Corpus, units: pa.Table) -> Iterator[tuple[int, Sample]]:
    """Re-read the corpus and yield ``(sample_index, Sample)`` for the units ingest found valid."""
    index = units.column("sample_index").to_numpy()
    for unit, item in enumerate(corpus.items()):
        if unit >= len(index):
            raise RuntimeError(f"corpus changed since ingest: more than {len(index)} units")
        if index[unit] >= 0:
            if not isinstance(item, Sample):
                raise RuntimeError(f"corpus changed since ingest at unit {unit}")
            yield int(index[unit]), item


MIN_CAPTION_CHARS = 3  # shorter normalised captions ("a", "") never enter the caption index


def long_enough(captions: list[str]) -> np.ndarray:
    """Normalised captions that may join a caption signal at all (MinHash or embeddings)."""
    return np.array([len(c) >= MIN_CAPTION_CHARS for c in captions], dtype=bool)


def compute_signatures(captions: list[str], params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """(signatures, usable): captions with no shingles or under MIN_CAPTION_CHARS are not usable."""
    signatures, empty = MinHasher(params).signatures(captions)
    return signatures, ~empty & long_enough(captions)


def compute_embeddings(corpus: Corpus, units: pa.Table, params: EmbedderParams) -> np.ndarray:
    """Embeddings in sample_index order; decoding is the same as ingest's, so the rows line up."""
    embedder = make_embedder(params)
    n = int(count_valid(units))
    rows: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    for _, sample in tqdm(
        valid_samples(corpus, units), total=n, desc=f"embed ({params.kind})", unit="img", mininterval=1.0
    ):
        batch.append(decode_image(sample.image, corpus.limits))
        if len(batch) >= params.batch_size:
            rows.append(embedder.embed(batch))
            batch = []
    if batch:
        rows.append(embedder.embed(batch))
    if not rows:
        return np.zeros((0, 1), np.float32)
    out = np.concatenate(rows).astype(np.float32)
    if len(out) != n:
        raise RuntimeError(f"embedded {len(out)} images, ingest found {n} valid samples")
    return out


def count_valid(units: pa.Table) -> int:
    return int((units.column("sample_index").to_numpy() >= 0).sum())


def compute_neighbor_pairs(embeddings: np.ndarray, params: IndexParams) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour pairs among finite embeddings (indices refer to the full embedding array)."""
    finite = np.flatnonzero(finite_rows(embeddings))
    pairs, sims = neighbor_pairs(embeddings[finite], params)
    return finite[pairs] if len(pairs) else pairs, sims
