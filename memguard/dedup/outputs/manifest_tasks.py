"""``manifest.parquet`` and ``removals.parquet`` written as tasks: no process holds more than one task's
rows of either.

The driver saves what the rows need per valid sample — the decision's arrays and each sample's caption
Jaccard and image similarity with its keeper, as ``.npy`` files, and the keys of the keepers that removed
samples name, as an Arrow file — in a scratch folder that every worker sees (the cache's). Each task owns
a range of input units (a part of the corpus, cut every ``UNITS_PER_TASK`` units): it reads those units'
rows of the joined ``units.parquet`` (row groups outside the range skipped by their statistics), maps its
slice of the arrays, writes its manifest rows and removals as files of its own, and returns its counts.
The driver appends the files in unit order, a task's rows at a time, so the outputs do not depend on the
executor or the number of workers; a corpus of at most ``UNITS_PER_TASK`` units builds them in the
calling process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memguard.common.atomic import atomic_path, write_table
from memguard.common.mapped import load_mapped
from memguard.dedup.decide.decision import Decision
from memguard.dedup.outputs.manifest import MANIFEST_SCHEMA, build_manifest
from memguard.dedup.outputs.removals import REMOVALS_FILE, build_removals, removals_schema
from memguard.dedup.outputs.stats import ManifestCounts

# A task's manifest rows (~1 KB each while built): ~270 MB of a worker's memory at most.
UNITS_PER_TASK = 262_144
UNIT_COLUMNS = ["unit", "key", "source", "offset", "reason", "detail", "sample_index"]
SAMPLE_ARRAYS = ("labels", "keeper", "size", "finite", "signal", "caption_jaccard", "image_sim")

RunTasks = Callable[[Callable[..., ManifestCounts], list[tuple["ManifestTask"]]], list[ManifestCounts]]


@dataclass(frozen=True)
class ManifestTask:
    units: str  # the joined units.parquet
    first: int
    last: int  # unit rows [first, last)
    arrays: str  # the folder of SAMPLE_ARRAYS, keepers.npy and keeper_keys.arrow
    signals: tuple[str, ...]  # the names of signal.npy's codes
    policy: str
    id_column: str
    out: str  # the stem of this task's files


def manifest_task(task: ManifestTask) -> ManifestCounts:
    """Run in a worker: write ``<out>.manifest.parquet`` and ``<out>.removals.parquet`` for the task's units."""
    units = pq.read_table(
        task.units, columns=UNIT_COLUMNS, filters=[("unit", ">=", task.first), ("unit", "<", task.last)]
    )
    if units.num_rows != task.last - task.first:
        raise RuntimeError(f"{task.units}: {units.num_rows} rows for units [{task.first}, {task.last})")
    sample_index = units.column("sample_index").to_numpy()
    valid_rows = np.flatnonzero(sample_index >= 0)
    start = int(sample_index[valid_rows[0]]) if len(valid_rows) else 0
    stop = start + len(valid_rows)
    if not np.array_equal(sample_index[valid_rows], np.arange(start, stop)):  # dense in unit order: the join's
        raise RuntimeError(f"{task.units}: sample indices of units [{task.first}, {task.last}) are not consecutive")
    arrays = {name: load_mapped(Path(task.arrays) / f"{name}.npy")[start:stop] for name in SAMPLE_ARRAYS}
    decision = Decision(labels=arrays["labels"], keeper=arrays["keeper"], size=arrays["size"],
                        signal=np.asarray(task.signals, dtype=object)[arrays["signal"]], finite=arrays["finite"],
                        first=start)  # fmt: skip
    manifest = build_manifest(
        units,
        valid_rows,
        decision,
        caption_jaccard=arrays["caption_jaccard"],
        image_sim=arrays["image_sim"],
        keeper_key=_keeper_keys(Path(task.arrays), decision),
        policy=task.policy,
    )
    write_table(f"{task.out}.manifest.parquet", manifest)
    write_table(f"{task.out}.removals.parquet", build_removals(manifest, id_column=task.id_column))
    return ManifestCounts.of(manifest)


def _keeper_keys(folder: Path, decision: Decision) -> np.ndarray:
    """Each sample's keeper's key where the sample is removable, "" elsewhere."""
    out = np.full(len(decision.keeper), "", dtype=object)
    removable = np.flatnonzero(decision.removable)
    if len(removable):
        keepers = load_mapped(folder / "keepers.npy")
        with pa.memory_map(str(folder / "keeper_keys.arrow")) as source:
            keys = pa.ipc.open_file(source).read_all().column("key")
            at = np.searchsorted(keepers, decision.keeper[removable])
            out[removable] = keys.take(pa.array(at)).to_numpy(zero_copy_only=False)
    return out


def unit_ranges(rows_per_part: Sequence[int]) -> list[tuple[int, int]]:
    """The units of each part, in order, cut every ``UNITS_PER_TASK`` units (no range spans two parts)."""
    ranges, start, units_per_task = [], 0, UNITS_PER_TASK
    for rows in rows_per_part:
        ranges += [(lo, min(lo + units_per_task, start + rows)) for lo in range(start, start + rows, units_per_task)]
        start += rows
    return ranges


def write_manifest(
    units_file: Path,
    ranges: list[tuple[int, int]],
    decision: Decision,
    *,
    caption_jaccard: np.ndarray,
    image_sim: np.ndarray,
    keeper_keys: Callable[[np.ndarray], pa.ChunkedArray],
    policy: str,
    id_column: str,
    scratch: Path,
    out_dir: Path,
    run: RunTasks,
) -> ManifestCounts:
    """Write ``out_dir/manifest.parquet`` and ``out_dir/removals.parquet`` by tasks over ``ranges`` of the
    units in ``units_file``; ``keeper_keys`` gives the keys of some valid samples (in the order asked).
    Returns the manifest's counts."""
    signal = pa.array(decision.signal, pa.string()).dictionary_encode()
    arrays = dict(labels=decision.labels, keeper=decision.keeper, size=decision.size, finite=decision.finite,
                  signal=signal.indices.to_numpy(), caption_jaccard=caption_jaccard, image_sim=image_sim)  # fmt: skip
    for name in SAMPLE_ARRAYS:
        np.save(scratch / f"{name}.npy", arrays[name], allow_pickle=False)
    keepers = np.unique(decision.keeper[decision.removable])
    np.save(scratch / "keepers.npy", keepers, allow_pickle=False)
    with pa.OSFile(str(scratch / "keeper_keys.arrow"), "wb") as sink:
        table = pa.table({"key": keeper_keys(keepers).cast(pa.string())})
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    names = tuple(str(s) for s in signal.dictionary.to_pylist())
    tasks = [
        (ManifestTask(str(units_file), lo, hi, str(scratch), names, policy, id_column, str(scratch / f"units-{lo}")),)
        for lo, hi in ranges
    ]
    # A corpus of at most one task's units stays in this process: a worker pool's start (~2 s) would
    # cost more than building its rows.
    small = not ranges or ranges[-1][1] - ranges[0][0] <= UNITS_PER_TASK
    counts = [manifest_task(*job) for job in tasks] if small else run(manifest_task, tasks)
    outs = [task.out for (task,) in tasks]
    _concatenate([f"{out}.manifest.parquet" for out in outs], MANIFEST_SCHEMA, out_dir / "manifest.parquet")
    _concatenate([f"{out}.removals.parquet" for out in outs], removals_schema(id_column), out_dir / REMOVALS_FILE)
    return sum(counts, ManifestCounts())


def _concatenate(files: list[str], schema: pa.Schema, final: Path) -> None:
    """One Parquet file of ``files``' rows in order, a file at a time (each a row group of the result)."""
    with atomic_path(final) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for file in files:
            writer.write_table(pq.read_table(file, schema=schema))
