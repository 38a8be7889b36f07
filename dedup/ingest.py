"""Step 1, ``ingest``: read every input unit once, validate it, hash its pixels and caption.

Writes ``units.parquet``: one row per input unit in input order. Valid samples get a dense
``sample_index`` that later steps (signatures, embeddings) use as their row number.
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
from dedup.io.sample import Rejection, Sample
from dedup.io.validate import Invalid, decode_image
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
            values.append(row.get(name))

    for unit, item in enumerate(tqdm(corpus.items(), desc="ingest", unit="unit", mininterval=1.0)):
        if isinstance(item, Rejection):
            add(
                unit=unit,
                key=item.key,
                source=item.source,
                offset=item.offset,
                status="rejected",
                reason=str(item.reason),
                detail=item.detail[:500],
                sample_index=-1,
            )
            continue
        try:
            rgb = decode_image(item.image, corpus.limits)
        except Invalid as err:
            add(
                unit=unit,
                key=item.key,
                source=item.source,
                offset=-1,
                status="rejected",
                reason=str(err.reason),
                detail=err.detail[:500],
                caption=item.caption,
                sample_index=-1,
            )
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
    index = units.column("sample_index").to_pylist()
    for unit, item in enumerate(corpus.items()):
        if unit >= len(index):
            raise RuntimeError(f"corpus changed since ingest: more than {len(index)} units")
        if index[unit] >= 0:
            if not isinstance(item, Sample):
                raise RuntimeError(f"corpus changed since ingest at unit {unit}")
            yield index[unit], item
