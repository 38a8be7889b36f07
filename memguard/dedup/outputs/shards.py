"""The cleaned corpus: each input part is read once more (never decoded, thumbnails aside) and its kept
samples copied into output shards of its own — ``shard-<part>-<n>.tar`` — so the parts run in parallel
(``executor.workers``) and the output does not depend on how many workers ran. Sorted by name, the output
shards hold the kept samples in input order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memguard.corpus.metadata import CaptionSource
from memguard.corpus.sample import Sample, printable
from memguard.corpus.spec import InputChanged, check_unchanged
from memguard.corpus.validate import Limits, decode_image
from memguard.corpus.writer import ShardWriter
from memguard.dedup.executor import ExecutorConfig, run_parts
from memguard.dedup.parts import Layout, read_part


@dataclass(frozen=True, kw_only=True)
class PartApply:
    """What one worker needs for one part: the part as the map stage read it (its identity and each unit
    row's key), its items' sample indices, and its slice of the decisions."""

    index: int
    kind: str
    part: str
    identity: object
    limits: Limits
    captions: CaptionSource
    unit_keys: np.ndarray  # per unit row of the part: the key the map stage recorded
    sample_index: np.ndarray  # per unit row of the part: its sample index, or -1
    first: int  # the part's first sample index (its valid samples are numbered consecutively)
    kept: np.ndarray  # per valid sample of the part
    weights: np.ndarray | None
    thumbnails_of: frozenset[int]
    folder: Path
    shard_size: int


def _apply_part(job: PartApply) -> tuple[int, dict[int, np.ndarray]]:
    """Copy the part's kept samples. The part must be the one the map stage read — the same identity
    before and after this read, the same key at every unit row, the same number of rows — or the run stops
    (InputChanged) with nothing of this part committed: a shard swapped between the stages would otherwise
    put duplicates back into the clean corpus and drop kept samples, under a manifest that says otherwise."""
    writer = ShardWriter(job.folder, job.shard_size, prefix=f"shard-{job.index:06d}") if job.shard_size else None
    thumbs: dict[int, np.ndarray] = {}
    rows = len(job.sample_index)
    try:
        check_unchanged(job.kind, job.part, job.identity)
        row = -1
        for row, item in enumerate(read_part(job.kind, job.part, job.limits, captions=job.captions)):
            if row >= rows or printable(item.key) != job.unit_keys[row]:
                raise InputChanged(f"{job.part} changed since it was mapped (unit {row} is not the one mapped); rerun")
            i = int(job.sample_index[row])
            if i < 0:
                continue
            if not isinstance(item, Sample):
                raise InputChanged(f"{job.part} changed since it was mapped (unit {row} is no longer a sample); rerun")
            local = i - job.first
            if writer is not None and job.kept[local]:
                writer.write(item, float(job.weights[local]) if job.weights is not None else None)
            if i in job.thumbnails_of:
                thumbs[i] = decode_image(item.image, job.limits)
        if row + 1 != rows:
            raise InputChanged(f"{job.part} changed since it was mapped ({row + 1} units, {rows} mapped); rerun")
        check_unchanged(job.kind, job.part, job.identity)
    except BaseException:
        if writer is not None:
            writer.abort()  # an interrupted shard is never committed under its final name
        raise
    if writer is None:
        return 0, thumbs
    writer.close()
    return len(writer.shards), thumbs


def write_kept_shards(
    layout: Layout,
    sample_index: np.ndarray,
    *,
    unit_keys: np.ndarray,
    limits: Limits,
    captions: CaptionSource,
    kept: np.ndarray,
    weights: np.ndarray | None,
    out_dir: Path,
    shard_size: int,
    thumbnails_of: set[int],
    executor: ExecutorConfig,
) -> tuple[int, dict[int, np.ndarray]]:
    """Write the samples where ``kept`` (per valid sample) into ``out_dir/shards`` (none when
    ``shard_size`` is 0: at most ``shard_size`` samples per output shard), with ``weights`` as their
    ``sampling_weight`` when given; decode the samples in ``thumbnails_of``. ``sample_index`` and
    ``unit_keys`` are per unit row of the whole corpus, the parts' rows consecutive as ``layout`` says.
    Returns (shards written, thumbnails)."""
    if not shard_size and not thumbnails_of:
        return 0, {}
    jobs: list[PartApply] = []
    start = 0
    for n, (part, rows) in enumerate(zip(layout.parts, layout.rows, strict=True)):
        index = sample_index[start : start + rows]
        keys = unit_keys[start : start + rows]
        start += rows
        valid = index[index >= 0]
        first = int(valid[0]) if len(valid) else 0
        span = slice(first, first + len(valid))
        wanted = frozenset(i for i in thumbnails_of if first <= i < first + len(valid))
        if not (shard_size and kept[span].any()) and not wanted:
            continue  # nothing to copy from this part
        job = PartApply(
            index=n,
            kind=layout.kind,
            part=part,
            identity=layout.identities[n],
            limits=limits,
            captions=captions,
            unit_keys=keys,
            sample_index=index,
            first=first,
            kept=kept[span],
            weights=weights[span] if weights is not None else None,
            thumbnails_of=wanted,
            folder=out_dir / "shards",
            shard_size=shard_size,
        )
        jobs.append(job)
    shards, thumbs = 0, {}
    sizes = layout.sizes
    work = sum(sizes[job.index] for job in jobs) if sizes is not None else None
    # run_parts calls the function with each job's arguments: here a one-element tuple, the record.
    for written, found in run_parts(_apply_part, [(job,) for job in jobs], executor, work_bytes=work):
        shards += written
        thumbs.update(found)
    return shards, thumbs
