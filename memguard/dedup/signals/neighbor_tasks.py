"""The image neighbour search as tasks on the executor (a process pool, or Ray over a cluster).

The driver plans: for each planned search (``neighbors.planned_searches``: an indexed view and gate, a
query view and rows) it builds the index once — trained on a sample, the vectors added a block at a time
from the memory-mapped embeddings — and saves it beside the tasks with the row lists they need; then one
task per ``TASK_QUERIES`` queries loads the index (read whole), searches its block against
the memory-mapped embeddings and writes the pairs it found to a file of its own. The driver reads the
files back in task order. Task boundaries are multiples of ``QUERY_BLOCK``, so every faiss call sees the
batch it would see in one process: the pairs are exactly those of the in-process search (tested), for
any number of workers.

Below ``DISTRIBUTE_FROM`` queries in all the search stays in one process: building and loading the
indexes then costs more than a second core saves.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memguard.common.mapped import file_backed, load_mapped
from memguard.dedup.signals.neighbors import (
    QUERY_BLOCK,
    PlannedSearch,
    QueryBlocks,
    SearchIndex,
    SearchSpec,
    Widen,
    found_codes,
    searcher,
)
from memguard.dedup.signals.views import ViewLayout, view

TASK_QUERIES = 4 * QUERY_BLOCK  # queries per task
DISTRIBUTE_FROM = 2 * TASK_QUERIES  # queries in all, over every planned search

RunTasks = Callable[[Callable[..., str], list[tuple["SearchTask"]]], list[str]]


@dataclass(frozen=True)
class SearchTask:
    """One block of one planned search's queries: files only (a task may run on another node)."""

    embeddings: str  # the .npy of every row (memory-mapped)
    layout: ViewLayout
    index: str  # the saved index's stem (``SearchIndex.save``)
    indexed_view: int
    indexed: str | None  # .npy of the rows the index holds (a gated index), None: every row
    query_view: int
    queries: str | None  # .npy of the query rows, None: every row
    lo: int
    hi: int
    k: int
    floor: float
    widen: str | None  # .npy of the widened rows' mask
    widen_floor: float
    out: str  # the stem of this task's pair files


def search_task(task: SearchTask) -> str:
    """Run in a worker: search the task's queries, write ``<out>.codes.npy`` and ``<out>.values.npy``."""
    embeddings = load_mapped(Path(task.embeddings))
    indexed = np.load(task.indexed, mmap_mode="r", allow_pickle=False) if task.indexed else None
    all_views = view(embeddings, task.layout, task.indexed_view)
    held = all_views if indexed is None else all_views[indexed]
    search = SearchIndex.load(task.index, held)
    queries = np.load(task.queries, mmap_mode="r", allow_pickle=False) if task.queries else None
    widen = Widen(np.load(task.widen, allow_pickle=False), task.widen_floor) if task.widen else None
    blocks = QueryBlocks(task.query_view, queries, task.lo, task.hi, task.k, task.floor, widen)
    codes, values = found_codes(embeddings, search, indexed, layout=task.layout, blocks=blocks)
    np.save(f"{task.out}.codes.npy", codes, allow_pickle=False)
    np.save(f"{task.out}.values.npy", values, allow_pickle=False)
    return task.out


@dataclass(frozen=True)
class NeighborTasks:
    """``neighbors.SearchTasks`` on an executor: ``run`` runs the tasks (results in order), ``folder``
    holds the indexes, row lists and task outputs (seen by every worker: the cache's own folder)."""

    run: RunTasks
    folder: Path

    def worth_it(self, plans: list[PlannedSearch], n: int) -> bool:
        return sum(n if queries is None else len(queries) for *_, queries in plans) >= DISTRIBUTE_FROM

    def found(
        self, embeddings: np.ndarray, plans: list[PlannedSearch], spec: SearchSpec
    ) -> tuple[np.ndarray, np.ndarray]:
        params, layout, floor, widen = spec.params, spec.layout, spec.floor, spec.widen
        self.folder.mkdir(parents=True, exist_ok=True)
        # The finite rows of a corpus with non-finite ones are an array in memory: the tasks read a copy.
        source = str(file_backed(embeddings, spare=self.folder / "embeddings.npy"))
        widen_file = self._rows("widen", widen.rows) if widen is not None else None
        tasks: list[tuple[SearchTask]] = []
        built: dict[tuple[int, tuple[int, int] | None], tuple[str, str | None]] = {}
        for s, (b, gate, indexed, a, queries) in enumerate(plans):
            if (b, gate) not in built:  # one index per indexed view and gate, built once
                held = view(embeddings, layout, b) if indexed is None else view(embeddings, layout, b)[indexed]
                stem = str(self.folder / f"index-{len(built)}")
                searcher(held, params).save(stem)
                built[b, gate] = (stem, self._rows(f"indexed-{len(built)}", indexed) if indexed is not None else None)
            stem, indexed_file = built[b, gate]
            queries_file = self._rows(f"queries-{s}", queries) if queries is not None else None
            total = len(embeddings) if queries is None else len(queries)
            k = min(params.k + 1, len(embeddings) if indexed is None else len(indexed))
            for lo in range(0, total, TASK_QUERIES):
                out = str(self.folder / f"found-{s}-{lo}")
                tasks.append((SearchTask(source, layout, stem, b, indexed_file, a, queries_file, lo,
                                         min(lo + TASK_QUERIES, total), k, floor, widen_file,
                                         widen.floor if widen is not None else 0.0, out),))  # fmt: skip
        outs = self.run(search_task, tasks)
        codes = [np.load(f"{out}.codes.npy", allow_pickle=False) for out in outs]
        values = [np.load(f"{out}.values.npy", allow_pickle=False) for out in outs]
        shutil.rmtree(self.folder, ignore_errors=True)
        return np.concatenate(codes), np.concatenate(values)

    def _rows(self, name: str, rows: np.ndarray) -> str:
        path = self.folder / f"{name}.npy"
        np.save(path, rows, allow_pickle=False)
        return str(path)
