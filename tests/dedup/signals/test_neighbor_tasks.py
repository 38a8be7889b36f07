"""The image neighbour search as tasks gives exactly the in-process search's pairs: single-view (an
embedding corpus's vectors) and multi-view (the robust layout, gated and filtered query rows), several
tasks per search, in this process and in a pool of workers; and a whole dedup run is unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import memguard.dedup.signals.lsh_tasks as lsh_tasks
import memguard.dedup.signals.neighbor_tasks as neighbor_tasks
import memguard.dedup.signals.neighbors as neighbors
from bench.edits import edit
from memguard.common.cache import Cache
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.twemoji import emoji_files, render
from memguard.dedup.executor import ExecutorConfig, run_parts
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.dedup.signals.neighbor_tasks import NeighborTasks, search_task
from memguard.dedup.signals.neighbors import IndexParams, Widen, neighbor_pairs
from memguard.dedup.signals.robust import LAYOUT, RobustEmbedder
from tests.conftest import TINY_TWEMOJI

IVF = IndexParams(kind="ivf", exact_below=0, nlist=8, nprobe=4, reduce_dim=16, k=8, min_sim=0.5)


def _inline(function: Any, jobs: list[tuple[Any, ...]]) -> list[Any]:
    return [function(*job) for job in jobs]


def _mapped(array: np.ndarray, folder: Path) -> np.ndarray:
    """The array as the joined map entry hands it over: memory-mapped from its .npy."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", np.ascontiguousarray(array, np.float32), allow_pickle=False)
    return np.load(folder / "embeddings.npy", mmap_mode="r")


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks and tasks of a few hundred queries, always as tasks: many tasks on a small corpus."""
    monkeypatch.setattr(neighbors, "QUERY_BLOCK", 128)
    monkeypatch.setattr(neighbor_tasks, "TASK_QUERIES", 256)
    monkeypatch.setattr(neighbor_tasks, "DISTRIBUTE_FROM", 0)


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32) + 0.5
    x[1::7] = x[::7][: len(x[1::7])] + 0.1 * rng.standard_normal((len(x[1::7]), dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.usefixtures("small_blocks")
def test_single_view_tasks_equal_one_process(tmp_path: Path) -> None:
    vectors = _mapped(_vectors(1_500, 24, 0), tmp_path / "joined")
    widen = Widen(np.arange(1_500) % 3 == 0, 0.2)
    expected = neighbor_pairs(vectors, IVF, widen=widen)
    tasks = NeighborTasks(_inline, tmp_path / "scratch")
    got = neighbor_pairs(vectors, IVF, widen=widen, tasks=tasks)
    assert len(expected[0]) > 200
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert not (tmp_path / "scratch").exists()  # indexes, row lists and task files removed
    # Not memory-mapped (the finite rows of a corpus with NaN rows): the tasks read a copy.
    again = neighbor_pairs(np.array(vectors), IVF, widen=widen, tasks=NeighborTasks(_inline, tmp_path / "s2"))
    assert np.array_equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])


@pytest.fixture(scope="module")
def robust_vectors() -> np.ndarray:
    files = emoji_files()
    picks = np.random.default_rng(5).choice(len(files), 150, replace=False)
    originals = [render(files[i], 64) for i in sorted(picks)]
    rng = np.random.default_rng(2)
    names = ("flip", "crop80", "grey", "letterbox15", "rotate5")
    copies = [np.asarray(edit(rgb, names[i % 5], rng).convert("RGB")) for i, rgb in enumerate(originals)]
    return RobustEmbedder().embed(originals + copies)


@pytest.mark.usefixtures("small_blocks")
def test_multi_view_tasks_equal_one_process(robust_vectors: np.ndarray, tmp_path: Path) -> None:
    vectors = _mapped(robust_vectors, tmp_path / "joined")
    params = IndexParams(kind="ivf", exact_below=0, nlist=4, nprobe=4, reduce_dim=32, k=8, min_sim=0.8)
    plans = neighbors.planned_searches(vectors, LAYOUT)
    assert any(indexed is not None for _, _, indexed, _, _ in plans)  # a gated index (grey)
    assert any(queries is not None for *_, queries in plans)  # and filtered query rows (trim)
    expected = neighbor_pairs(vectors, params, LAYOUT)
    got = neighbor_pairs(vectors, params, LAYOUT, tasks=NeighborTasks(_inline, tmp_path / "scratch"))
    assert len(expected[0]) >= 100
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_tasks_in_worker_processes_equal_one_process(
    robust_vectors: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(neighbor_tasks, "DISTRIBUTE_FROM", 0)  # the planning side; workers keep the blocks
    vectors = _mapped(robust_vectors, tmp_path / "joined")
    params = IndexParams(kind="ivf", exact_below=0, nlist=4, nprobe=4, reduce_dim=32, k=8, min_sim=0.8)
    expected = neighbor_pairs(vectors, params, LAYOUT)
    pool = NeighborTasks(lambda f, jobs: run_parts(f, jobs, ExecutorConfig(workers=2)), tmp_path / "scratch")
    got = neighbor_pairs(vectors, params, LAYOUT, tasks=pool)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_a_dedup_run_with_its_searches_as_tasks_is_unchanged(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = open_corpus(CorpusSpec(twemoji=TINY_TWEMOJI), cache_dir)
    params = DedupParams(write_shards=False, sheet_clusters=0)
    one = ExecutorConfig(workers=1)
    before = run_dedup(corpus, params, out_dir=tmp_path / "one", cache=Cache(tmp_path / "c1"), executor=one)
    monkeypatch.setattr(neighbors, "QUERY_BLOCK", 64)
    monkeypatch.setattr(neighbor_tasks, "TASK_QUERIES", 128)
    monkeypatch.setattr(neighbor_tasks, "DISTRIBUTE_FROM", 0)
    monkeypatch.setattr(lsh_tasks, "DISTRIBUTE_FROM", 0)  # the caption bands as tasks too
    ran: list[str] = []

    def counted(task: neighbor_tasks.SearchTask) -> str:
        ran.append(task.out)
        return search_task(task)

    monkeypatch.setattr(neighbor_tasks, "search_task", counted)
    after = run_dedup(corpus, params, out_dir=tmp_path / "tasks", cache=Cache(tmp_path / "c2"), executor=one)
    assert len(ran) > 5 and after.stats["status"]["duplicate"] > 20  # type: ignore[index]
    assert str(pq.read_table(after.manifest).to_pylist()) == str(pq.read_table(before.manifest).to_pylist())
