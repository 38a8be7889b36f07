"""The map stage: one pass per input part (a shard, or a whole image folder) that reads every unit once
and decodes every image once, yielding all that the global steps need per sample — validation status and
reason, pixel hash, normalised caption, MinHash signature, image embedding, size.

Each part's output is its own cache entry (``map/<key>``: ``units.parquet`` with one row per unit in
order, ``signatures.npy``, ``usable.npy``, ``embeddings.npy`` for its valid samples, and the local
features of those with keypoints: ``features.npy``, one packed row each, and ``feature_rows.npy``, each
valid sample's row there or -1), keyed by the part's
identity (path, size, mtime or ETag, plus its img2dataset parquet) and the parameters that shape the
outputs. A rerun skips finished parts; a killed run recomputes only the parts it had not finished; a
changed shard recomputes only itself. Parts run in a process pool (``executor.workers``, all cores by
default); the result does not depend on the number of workers: parts are joined in input order.

Joining applies what crosses parts: a key already seen in an earlier part is ``duplicate_key`` (as the
sequential reader does), and valid samples get a dense ``sample_index`` across the corpus.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memguard.common.atomic import atomic_path, write_table
from memguard.common.cache import Cache, entry_key
from memguard.common.mapped import load_mapped, release, rows_of, write_npy
from memguard.corpus.metadata import CaptionSource
from memguard.corpus.sample import Reason, Rejection, printable
from memguard.corpus.spec import Corpus, check_unchanged
from memguard.corpus.validate import Invalid, Limits, decode_image
from memguard.dedup.executor import ExecutorConfig, run_parts
from memguard.dedup.parts import Layout, corpus_parts, read_part
from memguard.dedup.signals.embed import EmbedderParams, make_embedder
from memguard.dedup.signals.local_features import keypoint_counts, local_features
from memguard.dedup.signals.local_params import FeatureParams
from memguard.dedup.signals.minhash import MinHashParams, caption_signatures
from memguard.dedup.signals.normalize import normalize_caption
from memguard.dedup.signals.pixels import pixel_hash
from memguard.dedup.signals.precomputed import BuiltLookup, Lookup
from memguard.dedup.stages.map_embeddings import map_embedding_part
from memguard.dedup.stages.units import UNIT_COLUMNS, UNIT_SCHEMA

MAPPED_ARRAYS = ("signatures", "usable", "embeddings")  # one row per valid sample, each part's and joined


@dataclass(frozen=True)
class MapParams:
    limits: Limits
    captions: CaptionSource
    minhash: MinHashParams
    embedder: EmbedderParams
    local: FeatureParams | None  # None: no local features (verification off)


@dataclass(frozen=True)
class Mapped:
    """The joined map outputs: ``units`` (one row per input unit, corpus order: the ``DRIVER_COLUMNS`` of
    ``units_file``, the joined units.parquet, which tasks and the optional steps read) and per valid sample ``signatures``, ``usable``, ``embeddings`` and ``feature_rows`` (its row of the
    packed local ``features``, -1 without keypoints: small images, flat ones, verification off);
    ``key`` identifies all of it."""

    units: pa.Table
    units_file: Path
    signatures: np.ndarray
    usable: np.ndarray
    embeddings: np.ndarray
    features: np.ndarray
    feature_rows: np.ndarray
    key: str
    parts: int
    computed: int
    layout: Layout

    @cached_property
    def valid_rows(self) -> np.ndarray:
        """The unit row of each valid sample, in ``sample_index`` order."""
        return np.flatnonzero(self.units.column("sample_index").to_numpy() >= 0)

    @cached_property
    def valid_units(self) -> pa.Table:
        """The valid samples' rows, only the columns the decisions read (the units table's other columns
        are large at 10^6+ samples)."""
        columns = ["key", "pixel_hash", "width", "height"]
        return self.units.select(columns).take(pa.array(self.valid_rows))

    def valid_column(self, name: str) -> pa.ChunkedArray:
        """A column of ``units_file`` that the driver does not hold (``caption_norm``), valid samples only."""
        table = pq.read_table(self.units_file, columns=[name, "sample_index"])
        return table.filter(pc.greater_equal(table.column("sample_index"), 0)).column(name)


def map_part(kind: str, part: str, params: MapParams, *, folder: Path, lookup: str | None = None) -> None:
    """Read and decode one part once; write its units, signatures, usable mask and embeddings. With
    ``lookup`` (a built ``signals.precomputed`` lookup) the vectors are the curator's, found by key."""
    columns: dict[str, list[object]] = {name: [] for name in UNIT_COLUMNS}
    given = Lookup(Path(lookup)) if lookup is not None else None
    embedder = make_embedder(params.embedder) if given is None else None
    vectors: list[np.ndarray] = []
    features: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    places: list[tuple[int, int]] = []  # with ``lookup``: the batch's vectors' (part, row)

    def flush() -> None:
        vectors.append(embedder.embed(batch) if embedder is not None else given.vectors(places))  # type: ignore[union-attr]
        local = params.local
        features.append(local_features(batch, local) if local is not None else np.zeros((len(batch), 0), np.uint8))
        batch.clear()
        places.clear()

    def add(**row: object) -> None:
        for name, values in columns.items():
            value = row.get(name)
            values.append(printable(value) if isinstance(value, str) else value)

    for item in read_part(kind, part, params.limits, captions=params.captions):
        if isinstance(item, Rejection):
            add(key=item.key, source=item.source, offset=item.offset, status="rejected", reason=str(item.reason),
                detail=item.detail[:500], read_as_sample=False)  # fmt: skip
            continue
        place = given.where(item.key) if given is not None else None
        if given is not None and place is None:
            add(key=item.key, source=item.source, offset=item.offset, status="rejected", reason=str(Reason.NO_EMBEDDING),
                detail="dedup.image.embeddings has no single vector for this key", caption=item.caption,
                read_as_sample=True)  # fmt: skip
            continue
        try:
            rgb = decode_image(item.image, params.limits)
        except Invalid as err:
            add(key=item.key, source=item.source, offset=item.offset, status="rejected", reason=str(err.reason),
                detail=err.detail[:500], caption=item.caption, read_as_sample=True)  # fmt: skip
            continue
        add(key=item.key, source=item.source, offset=item.offset, status="valid", reason="", detail="", caption=item.caption,
            caption_norm=normalize_caption(item.caption), image_ext=item.image_ext, width=rgb.shape[1],
            height=rgb.shape[0], pixel_hash=pixel_hash(rgb), read_as_sample=True)  # fmt: skip
        batch.append(rgb)
        if place is not None:
            places.append(place)
        if len(batch) >= params.embedder.batch_size:
            flush()
    if batch:
        flush()
    units = pa.table(columns, schema=UNIT_SCHEMA)
    valid = [c for c, s in zip(columns["caption_norm"], columns["status"], strict=True) if s == "valid"]
    signatures, usable = caption_signatures([str(c) for c in valid], params.minhash)
    embeddings = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, 1), np.float32)
    width = params.local.row_bytes if params.local is not None else 0
    packed = np.concatenate(features) if features else np.zeros((0, width), np.uint8)
    # Only images with keypoints keep a row: most of a corpus of icons or thumbnails has none.
    has = keypoint_counts(packed, params.local) > 0 if params.local is not None else np.zeros(len(packed), bool)
    feature_rows = np.where(has, np.cumsum(has) - 1, -1).astype(np.int64)
    write_table(folder / "units.parquet", units)
    arrays = (("signatures", signatures), ("usable", usable), ("embeddings", embeddings), ("features", packed[has]),
              ("feature_rows", feature_rows))  # fmt: skip
    for name, array in arrays:
        np.save(folder / f"{name}.npy", array, allow_pickle=False)


@dataclass(frozen=True)
class MapJob:
    """One part for a worker: what to read, the identity its cache entry is keyed by, and where that is."""

    kind: str
    part: str
    params: MapParams
    identity: object
    cache_root: str
    key: str
    id_column: str | None = None  # an embedding corpus's id column (None: the first of the usual ones)
    lookup: str | None = None  # the curator's vectors for an image corpus (a built signals.precomputed lookup)


def _map_into_cache(job: MapJob) -> bool:
    """Run in a worker: fill the part's cache entry unless it is complete. True if it was computed. The
    entry is keyed by the part's identity, so the part must still have it after it was read."""

    def build(folder: Path) -> None:
        check_unchanged(job.kind, job.part, job.identity)
        if job.kind == "embeddings":
            map_embedding_part(job.part, job.params, id_column=job.id_column, folder=folder)
        else:
            map_part(job.kind, job.part, job.params, folder=folder, lookup=job.lookup)
        check_unchanged(job.kind, job.part, job.identity)

    cache = Cache(Path(job.cache_root))
    cache.get("map", job.key, build)
    return bool(cache.misses)


def _part_jobs(
    corpus: Corpus, params: MapParams, cache: Cache, *, lookup: BuiltLookup | None = None
) -> tuple[list[str], list[object], list[tuple[MapJob]]]:
    """The corpus's parts, their identities, and for each part the job of ``_map_into_cache``."""
    kind, parts, identities = corpus_parts(corpus)
    # An embedding part's units depend on which column is its id; an image part's never do. The curator's
    # vectors, where given, are part of every part's output.
    extra = [corpus.id_column] if kind == "embeddings" else []
    extra += [lookup.key] if lookup is not None else []
    keys = [entry_key("map", identity, asdict(params), *extra) for identity in identities]
    root = str(cache.root)
    jobs = [
        (MapJob(kind, p, params, i, root, k, id_column=corpus.id_column, lookup=lookup.folder if lookup else None),)
        for p, i, k in zip(parts, identities, keys, strict=True)
    ]
    return parts, identities, jobs


def map_corpus(
    corpus: Corpus, params: MapParams, *, cache: Cache, executor: ExecutorConfig, lookup: BuiltLookup | None = None
) -> Mapped:
    """Map every part of ``corpus`` (cached per part; in parallel as ``executor`` says) and join them
    (cached too: ``joined/<key>``). The two largest arrays, signatures and embeddings, come back
    memory-mapped from the joined entry (``memguard.common.mapped``). ``lookup``: the curator's vectors
    stand in for the embedder's (``signals.precomputed``)."""
    parts, identities, jobs = _part_jobs(corpus, params, cache, lookup=lookup)
    kind = jobs[0][0].kind if jobs else "shards"
    # A shard's size, or an embedding part's vector file's (the first stat of its identity).
    sizes = [int(identity[0][1]) for identity in identities] if kind != "folder" else None  # type: ignore[index]
    keys = [job.key for (job,) in jobs]
    computed = sum(run_parts(_map_into_cache, jobs, executor, work_bytes=sum(sizes) if sizes is not None else None))
    (cache.misses if computed else cache.hits).append("map")
    key = entry_key("joined", keys)
    folders = [cache.path("map", k) for k in keys]
    joined = cache.get("joined", key, lambda out: _join(folders, out))
    return Mapped(
        units=pq.read_table(joined / "units.parquet", columns=DRIVER_COLUMNS),
        units_file=joined / "units.parquet",
        signatures=load_mapped(joined / "signatures.npy"),
        usable=np.load(joined / "usable.npy", allow_pickle=False),
        embeddings=load_mapped(joined / "embeddings.npy"),
        features=load_mapped(joined / "features.npy"),
        feature_rows=np.load(joined / "feature_rows.npy", allow_pickle=False),
        key=key,
        parts=len(parts),
        computed=computed,
        layout=Layout(kind, parts, np.load(joined / "rows.npy", allow_pickle=False).tolist(), sizes, identities),
    )


# The joined units.parquet: each unit's row in corpus order, its map columns, its sample row (-1: none).
JOINED_SCHEMA = pa.schema([("unit", pa.int64()), *[f for f in UNIT_SCHEMA if f.name != "read_as_sample"],
                           ("sample_index", pa.int64())])  # fmt: skip
# What the driver reads of it: the decisions' columns. The manifest's (source, offset, reason, detail) are
# read by its tasks, the normalised captions by the semantic caption signal when it is on: held for every
# unit, they were ~450 of the driver's ~550 bytes a unit at 10^6 (bench/RESULTS.md).
DRIVER_COLUMNS = ["key", "pixel_hash", "width", "height", "sample_index"]


def _cross_part_repeats(folders: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Keys read as samples in more than one part: the first part's sample stays, later ones become
    duplicate_key (a repeat inside one part was already one in its map). Per unit: whether it is such a
    later repeat, and the source of the key's first sample; per unit, whether it was valid; rows per part.
    Only the key, source, status and read_as_sample columns are read (arrow arrays: a few bytes a unit)."""
    columns = ["key", "source", "status", "read_as_sample"]
    tables = [pq.read_table(f / "units.parquet", columns=columns) for f in folders]
    rows = [t.num_rows for t in tables]
    units = pa.concat_tables(tables) if tables else UNIT_SCHEMA.empty_table().select(columns)
    valid = pc.equal(units.column("status"), "valid").to_numpy(zero_copy_only=False)
    part_of = np.repeat(np.arange(len(tables)), rows)
    as_sample = np.flatnonzero(units.column("read_as_sample").to_numpy(zero_copy_only=False))
    cross = np.zeros(units.num_rows, bool)
    first_source = np.full(units.num_rows, None, dtype=object)
    if len(as_sample):
        keys = units.column("key").take(pa.array(as_sample))
        # Each sample's key as a group id, and the first (lowest) unit row of each group: pyarrow's hash
        # grouping, not a dict of 10^6+ Python strings.
        groups = pc.index_in(keys, value_set=pc.unique(keys)).to_numpy()
        first_row = np.full(int(groups.max()) + 1, len(cross), np.int64)
        np.minimum.at(first_row, groups, as_sample)
        first = first_row[groups]
        repeat = part_of[first] != part_of[as_sample]
        cross[as_sample[repeat]] = True
        sources = units.column("source").take(pa.array(first[repeat])).to_numpy(zero_copy_only=False)
        first_source[as_sample[repeat]] = sources
    return cross, first_source, valid, rows


def _join(folders: list[Path], out: Path) -> None:
    """One table of every unit and one array of each per-sample output, written into ``out`` a part at a
    time (one part's units in memory, not the corpus's)."""
    cross, first_source, valid, rows = _cross_part_repeats(folders)
    kept_valid = valid & ~cross
    sample_index = np.where(kept_valid, np.cumsum(kept_valid) - 1, -1)
    keep_rows = kept_valid[valid]  # per valid row of the maps: still a sample after joining
    bounds = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    with atomic_path(out / "units.parquet") as tmp:
        writer: pq.ParquetWriter | None = None
        for folder, lo, hi in zip(folders, bounds[:-1], bounds[1:], strict=True):
            part = _joined_part(pq.read_table(folder / "units.parquet"), cross[lo:hi], first_source[lo:hi])
            columns = {"unit": pa.array(np.arange(lo, hi)), "sample_index": pa.array(sample_index[lo:hi])}
            arrays = [columns[f.name] if f.name in columns else part.column(f.name) for f in JOINED_SCHEMA]
            table = pa.Table.from_arrays(arrays, schema=JOINED_SCHEMA)
            writer = writer or pq.ParquetWriter(tmp, JOINED_SCHEMA)
            writer.write_table(table)
        if writer is None:
            pq.write_table(JOINED_SCHEMA.empty_table(), tmp)
        else:
            writer.close()
    np.save(out / "rows.npy", np.array(rows, np.int64), allow_pickle=False)
    part_of = np.repeat(np.arange(len(folders)), rows)
    valid_per_part = np.bincount(part_of[valid], minlength=len(folders))
    for name in MAPPED_ARRAYS:
        _join_array(folders, name, valid_per_part, keep=keep_rows, path=out / f"{name}.npy")
    _join_features(folders, valid_per_part, keep=keep_rows, out=out)


def _joined_part(units: pa.Table, cross: np.ndarray, first_source: np.ndarray) -> pa.Table:
    """One part's units with its cross-part key repeats rejected (duplicate_key, their sample columns null)."""
    if not cross.any():
        return units.drop_columns(["read_as_sample"])
    status = units.column("status").to_numpy(zero_copy_only=False).astype(object)
    reason = units.column("reason").to_numpy(zero_copy_only=False).astype(object)
    detail = units.column("detail").to_numpy(zero_copy_only=False).astype(object)
    status[cross], reason[cross] = "rejected", str(Reason.DUPLICATE_KEY)
    detail[cross] = [f"first seen in {source}" for source in first_source[cross]]
    columns = {name: units.column(name) for name in units.column_names if name != "read_as_sample"}
    columns.update(status=pa.array(status, pa.string()), reason=pa.array(reason, pa.string()),
                   detail=pa.array(detail, pa.string()))  # fmt: skip
    mask, blank = pa.array(cross), pa.nulls(len(cross))
    for name in ("caption", "caption_norm", "image_ext", "pixel_hash", "width", "height"):
        columns[name] = pc.if_else(mask, blank.cast(columns[name].type), columns[name])
    return pa.table(columns)


JOIN_BLOCK_BYTES = 64 << 20  # a part's rows copied at once (loaded whole, a part was two copies in memory)


def _block_rows(array: np.ndarray) -> int:
    return max(1, JOIN_BLOCK_BYTES // max(1, array[:1].nbytes))


def _join_features(folders: list[Path], rows: np.ndarray, *, keep: np.ndarray, out: Path) -> None:
    """The parts' packed features of the kept samples that have them, one part at a time, and each kept
    sample's row among them (-1: none)."""
    blocks = np.split(keep, np.cumsum(rows)[:-1])
    index, taken, offset = [], [], 0
    for folder, count, part_keep in zip(folders, rows, blocks, strict=True):
        if not count:
            continue
        part_rows = np.load(folder / "feature_rows.npy", allow_pickle=False)[part_keep]
        has = part_rows >= 0
        index.append(np.where(has, offset + np.cumsum(has) - 1, -1))
        taken.append((folder, part_rows[has]))
        offset += int(has.sum())
    np.save(out / "feature_rows.npy", np.concatenate(index) if index else np.zeros(0, np.int64), allow_pickle=False)
    probe = np.load(folders[0] / "features.npy", mmap_mode="r") if folders else np.zeros((0, 0), np.uint8)
    def kept_features() -> Iterator[np.ndarray]:
        for folder, take in taken:
            features = load_mapped(folder / "features.npy")
            step = _block_rows(features)
            for start in range(0, len(take), step):
                yield rows_of(features, take[start : start + step])

    with open(out / "features.npy", "wb") as fh:
        write_npy(fh, probe.dtype, (offset, *probe.shape[1:]), blocks=kept_features())


def _join_array(folders: list[Path], name: str, rows: np.ndarray, *, keep: np.ndarray, path: Path) -> None:
    """The parts' ``name`` arrays (``rows[i]`` valid samples in part i), the rows where ``keep``, written
    part by part: one part in memory at a time."""
    with_rows = [f for f, r in zip(folders, rows, strict=True) if r] or folders[:1]
    probe = np.load(with_rows[0] / f"{name}.npy", mmap_mode="r")  # dtype and width without reading data
    blocks = np.split(keep, np.cumsum(rows)[:-1])  # each part's slice of ``keep``

    def kept_rows() -> Iterator[np.ndarray]:
        for folder, count, part_keep in zip(folders, rows, blocks, strict=True):
            if not count:  # a part without valid samples has (0, 1) embeddings whatever the embedder's width
                continue
            part = load_mapped(folder / f"{name}.npy")
            step = _block_rows(part)
            for start in range(0, count, step):
                yield part[start : start + step][part_keep[start : start + step]]
                release(part)

    with open(path, "wb") as fh:
        write_npy(fh, probe.dtype, (int(keep.sum()), *probe.shape[1:]), blocks=kept_rows())
