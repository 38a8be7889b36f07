"""The map stage for a part of an embedding corpus (``corpus=embeddings``: vectors + metadata, no images,
``memguard/corpus/embeddings.py``): the same outputs as an image part's map, from the curator's vectors.

Each metadata row is one unit, in order. Its key is the id column's value; a row without an id is
``bad_key`` (key ``metadata_<n>.parquet:<row>``), a repeated id in the part ``duplicate_key``, a row
without a usable caption ``empty_caption`` (and its kin) where captions are compared, a row past the end
of the vector file ``incomplete_sample``; vectors past the end of the metadata are ``incomplete_sample``
rows keyed ``img_emb_<n>.npy:<row>``. Valid rows' vectors are L2-normalised as float32; a zero or
non-finite vector stays non-finite, and the decide stage records it as ``non_finite_embedding``. There
are no pixels: no pixel hash (the exact signal never fires), no local features; width and height come
from the metadata's ``width``/``height`` where it has them (keeper priority), else 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from memguard.common.atomic import write_table
from memguard.common.config import ConfigError
from memguard.common.mapped import write_npy
from memguard.corpus.embeddings import (
    EmbeddingLayoutError,
    as_text,
    id_column_of,
    metadata_columns,
    metadata_of,
    open_vectors,
    read_metadata,
    vector_blocks,
)
from memguard.corpus.metadata import CAPTION_FIELDS
from memguard.corpus.sample import Reason
from memguard.corpus.validate import Invalid, Limits, validate_caption
from memguard.dedup.signals.embed import l2_normalise
from memguard.dedup.signals.minhash import caption_signatures
from memguard.dedup.signals.normalize import normalize_caption
from memguard.dedup.stages.units import UNIT_COLUMNS, UNIT_SCHEMA

if TYPE_CHECKING:
    from memguard.dedup.stages.map import MapParams


def _caption(value: Any, limits: Limits, *, required: bool, field: str) -> tuple[str, Reason | None, str]:
    """(caption, rejection reason or None, detail) of one metadata row."""
    if value is None or not isinstance(value, str):
        if not required:
            return "", None, ""
        held = "nothing" if value is None else type(value).__name__
        return "", Reason.EMPTY_CAPTION, f"metadata field {field!r} holds {held}"
    try:
        return validate_caption(value.encode("utf-8", "surrogatepass"), limits), None, ""
    except Invalid as err:
        if not required and err.reason == Reason.EMPTY_CAPTION:
            return "", None, ""
        return "", err.reason, err.detail


def _caption_field(columns: list[str], configured: str | None) -> str | None:
    if configured is not None:
        return configured if configured in columns else None
    return next((name for name in CAPTION_FIELDS if name in columns), None)


def _sizes(table: pa.Table, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's width and height where the metadata has them (0 elsewhere)."""

    def column(name: str) -> np.ndarray:
        if name not in table.column_names:
            return np.zeros(rows, np.int64)
        values = table.column(name).to_numpy(zero_copy_only=False)
        number = np.asarray(values, dtype=np.float64) if values.dtype != object else np.array(
            [float(v) if isinstance(v, int | float) else np.nan for v in values]
        )
        return np.where(np.isfinite(number), number, 0).astype(np.int64)

    return column("width"), column("height")


@dataclass(frozen=True)
class _Metadata:
    """One metadata file's columns that the map reads, row by row."""

    path: str
    id_name: str
    ids: list[Any]
    captions: list[Any]
    widths: np.ndarray
    heights: np.ndarray
    caption_field: str


class _Unreadable(Exception):
    """A part file that cannot be read: the part becomes one rejection row, as an unreadable shard does."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _read_metadata(path: str, params: MapParams, id_column: str | None) -> _Metadata:
    try:
        columns = metadata_columns(path)
        id_name = id_column_of(columns, id_column, where=Path(path).name)
        caption_name = _caption_field(columns, params.captions.field)
        table = read_metadata(path, [id_name, *([caption_name] if caption_name else []), "width", "height"])
    except ConfigError as err:  # the corpus's id column is not in this part
        raise _Unreadable(Reason.BAD_META, str(err)) from None
    except (OSError, ValueError) as err:  # not a parquet file, truncated, unreadable
        raise _Unreadable(Reason.SHARD_UNREADABLE, f"{type(err).__name__}: {err}") from None
    n = table.num_rows
    widths, heights = _sizes(table, n)
    return _Metadata(path, id_name, table.column(id_name).to_pylist(),
                     table.column(caption_name).to_pylist() if caption_name else [None] * n, widths, heights,
                     caption_name or params.captions.field or " or ".join(CAPTION_FIELDS))  # fmt: skip


def map_embedding_part(vectors_path: str, params: MapParams, *, id_column: str | None, folder: Path) -> None:
    """Write the part's ``units.parquet``, signatures, usable mask, embeddings and (empty) local features
    into ``folder``, as ``memguard.dedup.stages.map.map_part`` does for an image part."""
    metadata_path = metadata_of(vectors_path)
    units: dict[str, list[object]] = {name: [] for name in UNIT_COLUMNS}
    try:
        meta = _read_metadata(metadata_path, params, id_column)
    except _Unreadable as err:
        _add(units, key=Path(metadata_path).name, source=metadata_path, offset=-1, reason=err.reason,
             detail=err.detail, caption=None, width=0, height=0, read_as_sample=False)  # fmt: skip
        _write(folder, units, np.zeros((0, 1), np.float32), rows=np.zeros(0, np.int64), params=params)
        return
    try:
        vectors, vector_problem = open_vectors(vectors_path), ""
    except EmbeddingLayoutError as err:  # every row of the part is then rejected, with what was wrong
        vectors, vector_problem = np.zeros((0, 1), np.float32), str(err)
    valid_rows = _metadata_rows(units, meta, params, vectors=(vectors_path, len(vectors), vector_problem))
    vec_name, meta_name = Path(vectors_path).name, Path(metadata_path).name
    for row in range(len(meta.ids), len(vectors)):
        _add(units, key=f"{vec_name}:{row}", source=vectors_path, offset=row, reason=Reason.INCOMPLETE_SAMPLE,
             detail=f"{meta_name} has {len(meta.ids)} rows, no metadata for this vector", caption=None, width=0,
             height=0, read_as_sample=False)  # fmt: skip
    _write(folder, units, vectors, rows=np.asarray(valid_rows, np.int64), params=params)


def _metadata_rows(
    units: dict[str, list[object]], meta: _Metadata, params: MapParams, *, vectors: tuple[str, int, str]
) -> list[int]:
    """One unit per metadata row (added to ``units``); the rows that are valid samples."""
    vectors_path, n_vec, vector_problem = vectors
    meta_name, vec_name = Path(meta.path).name, Path(vectors_path).name
    seen: set[str] = set()
    valid_rows: list[int] = []
    for row, value in enumerate(meta.ids):
        key = as_text(value)
        caption, reason, detail = _caption(
            meta.captions[row], params.limits, required=params.captions.required, field=meta.caption_field
        )
        as_sample = key is not None and key not in seen
        if key is None:
            reason, detail = Reason.BAD_KEY, f"no {meta.id_name!r} value"
        elif key in seen:
            reason, detail = Reason.DUPLICATE_KEY, f"repeated in {meta_name}"
        elif vector_problem:
            reason, detail = Reason.SHARD_UNREADABLE, vector_problem
        elif row >= n_vec:
            reason, detail = Reason.INCOMPLETE_SAMPLE, f"{vec_name} has {n_vec} rows, no vector for row {row}"
        seen.add(key or "")
        valid = reason is None
        _add(units, key=key if key is not None else f"{meta_name}:{row}", source=meta.path, offset=row,
             reason=reason, detail=detail, caption=caption if valid or caption else None,
             width=int(meta.widths[row]), height=int(meta.heights[row]), read_as_sample=as_sample)  # fmt: skip
        if valid:
            valid_rows.append(row)
    return valid_rows


def _add(units: dict[str, list[object]], *, reason: Reason | None, caption: str | None, **row: object) -> None:
    valid = reason is None
    row.update(status="valid" if valid else "rejected", reason="" if valid else str(reason), caption=caption,
               caption_norm=normalize_caption(caption) if valid and caption is not None else None,
               image_ext=None, pixel_hash=None)  # fmt: skip
    row["detail"] = "" if valid else str(row["detail"])[:500]
    for name, values in units.items():
        values.append(row[name])


def _write(
    folder: Path, units: dict[str, list[object]], vectors: np.ndarray, *, rows: np.ndarray, params: MapParams
) -> None:
    table = pa.table(units, schema=UNIT_SCHEMA)
    valid = [c for c, s in zip(units["caption_norm"], units["status"], strict=True) if s == "valid"]
    signatures, usable = caption_signatures([str(c) for c in valid], params.minhash)
    write_table(folder / "units.parquet", table)
    with open(folder / "embeddings.npy", "wb") as fh:
        blocks = (l2_normalise(block) for block in vector_blocks(vectors, rows))
        write_npy(fh, np.dtype(np.float32), (len(rows), vectors.shape[1]), blocks=blocks)
    arrays = (("signatures", signatures), ("usable", usable), ("features", np.zeros((0, 0), np.uint8)),
              ("feature_rows", np.full(len(rows), -1, np.int64)))  # fmt: skip
    for name, array in arrays:
        np.save(folder / f"{name}.npy", array, allow_pickle=False)
