"""Caption LSH as tasks over bands gives exactly the in-process candidates and Jaccards, in this process
and in a pool of workers, from memory-mapped signatures or an array in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memguard.dedup.signals.lsh_tasks as lsh_tasks
from memguard.dedup.executor import ExecutorConfig, run_parts
from memguard.dedup.signals.lsh import LshParams, caption_pairs
from memguard.dedup.signals.lsh_tasks import LshTasks
from memguard.dedup.signals.minhash import MinHashParams, caption_signatures
from tests.tools import load_bench

WORDS = load_bench("embedding_corpus").WORDS


@pytest.fixture(scope="module")
def signatures(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    captions = [" ".join(rng.choice(WORDS, rng.integers(5, 9))) for _ in range(1_500)]
    for i in range(0, 1_500, 9):  # near-duplicates: one word changed
        words = captions[i].split()
        words[0] = "yellow"
        captions[i + 1] = " ".join(words)
    captions[7] = ""  # an unusable caption never pairs
    sigs, usable = caption_signatures(captions, MinHashParams())
    folder = tmp_path_factory.mktemp("joined")
    np.save(folder / "signatures.npy", sigs, allow_pickle=False)
    return np.load(folder / "signatures.npy", mmap_mode="r"), usable


def _inline(function: Any, jobs: list[tuple[Any, ...]]) -> list[Any]:
    return [function(*job) for job in jobs]


def test_band_tasks_equal_one_process(
    signatures: tuple[np.ndarray, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lsh_tasks, "DISTRIBUTE_FROM", 0)
    sigs, usable = signatures
    params = LshParams(threshold=0.3)
    pairs, jaccard = caption_pairs(sigs, usable, params)
    assert len(pairs) > 150 and not np.isin(7, pairs)
    for run, folder in ((_inline, "inline"), (lambda f, jobs: run_parts(f, jobs, ExecutorConfig(workers=2)), "pool")):
        tasks = LshTasks(run, tmp_path / folder)
        got = caption_pairs(sigs, usable, params, tasks=tasks)
        assert np.array_equal(got[0], pairs) and np.array_equal(got[1], jaccard)
        assert not (tmp_path / folder).exists()
    in_memory = caption_pairs(np.array(sigs), usable, params, tasks=LshTasks(_inline, tmp_path / "copy"))
    assert np.array_equal(in_memory[0], pairs) and np.array_equal(in_memory[1], jaccard)
