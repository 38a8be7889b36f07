"""Caption LSH candidates as tasks on the executor: each task owns a range of bands — it sorts the band
keys of every usable signature (memory-mapped from the joined map entry), emits the pairs that share a
bucket, keeps those whose estimated Jaccard reaches the floor, and writes them to a file of its own. The
driver merges the files: a pair found in several bands is one pair, with the Jaccard every band computed
alike. The pairs are exactly those of the in-process search (tested).

Below ``DISTRIBUTE_FROM`` usable captions the bands stay in one process: a band of 10^5 signatures sorts
in milliseconds, less than a task's start.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memguard.common.mapped import file_backed, load_mapped
from memguard.dedup.signals.lsh import LshParams, bands_rows, verified_codes

DISTRIBUTE_FROM = 500_000  # usable captions
BANDS_PER_TASK = 1

RunTasks = Callable[[Callable[..., str], list[tuple["BandTask"]]], list[str]]


@dataclass(frozen=True)
class BandTask:
    signatures: str  # the .npy of every sample's signature (memory-mapped)
    usable: str  # the .npy of which samples' captions may pair
    params: LshParams
    first: int
    last: int  # bands [first, last)
    out: str  # the stem of this task's files


def band_task(task: BandTask) -> str:
    """Run in a worker: write ``<out>.codes.npy`` and ``<out>.jaccard.npy`` for the task's bands."""
    signatures = load_mapped(Path(task.signatures))
    usable = np.load(task.usable, allow_pickle=False)
    codes, jaccard = verified_codes(signatures, usable, task.params, bands=range(task.first, task.last))
    np.save(f"{task.out}.codes.npy", codes, allow_pickle=False)
    np.save(f"{task.out}.jaccard.npy", jaccard, allow_pickle=False)
    return task.out


@dataclass(frozen=True)
class LshTasks:
    """``lsh.BandTasks`` on an executor: ``run`` runs the tasks (results in order); ``folder`` holds what
    they share and write (seen by every worker: the cache's own folder)."""

    run: RunTasks
    folder: Path

    def worth_it(self, usable: int) -> bool:
        return usable >= DISTRIBUTE_FROM

    def verified(self, signatures: np.ndarray, usable: np.ndarray, params: LshParams) -> tuple[np.ndarray, np.ndarray]:
        self.folder.mkdir(parents=True, exist_ok=True)
        source = str(file_backed(signatures, spare=self.folder / "signatures.npy"))
        np.save(self.folder / "usable.npy", usable, allow_pickle=False)
        bands, _ = bands_rows(params, signatures.shape[1])
        usable_file = str(self.folder / "usable.npy")
        tasks = []
        for first in range(0, bands, BANDS_PER_TASK):
            last, out = min(first + BANDS_PER_TASK, bands), str(self.folder / f"bands-{first}")
            tasks.append((BandTask(source, usable_file, params, first, last, out),))
        outs = self.run(band_task, tasks)
        codes = np.concatenate([np.load(f"{out}.codes.npy", allow_pickle=False) for out in outs])
        jaccard = np.concatenate([np.load(f"{out}.jaccard.npy", allow_pickle=False) for out in outs])
        shutil.rmtree(self.folder, ignore_errors=True)
        found, at = np.unique(codes, return_index=True)  # sorted, each pair once
        return found, jaccard[at]
