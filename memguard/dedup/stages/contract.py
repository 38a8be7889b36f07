"""What every dedup stage runs with, and the one way a stage caches named arrays.

A stage is a function ``stage(inputs, params, run) -> record``: its inputs are earlier stages' records
(each carrying the cache key that identifies it), its cache entries are keyed by those keys and its
parameters (``memguard.common.cache.entry_key``), and per-part work goes to ``run.executor``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from memguard.common.cache import Cache
from memguard.common.timing import StepTimer
from memguard.dedup.executor import ExecutorConfig, run_parts

T = TypeVar("T")


@dataclass(frozen=True)
class StageRun:
    """The cache, the step timer and the executor one dedup run shares across its stages."""

    cache: Cache
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    timer: StepTimer = field(default_factory=StepTimer)

    def run_tasks(self, function: Callable[..., T], jobs: Sequence[tuple[Any, ...]]) -> list[T]:
        """A global step's tasks (files in, files and small records out) on the run's executor, in order."""
        return run_parts(function, jobs, self.executor)

    def cached(self, step: str, key: str, compute: Callable[[Path], object]) -> Path:
        """The folder of ``step``'s entry ``key``, built by ``compute`` on a miss; timed as ``step``."""
        with self.timer.step(step) as record:
            hits = len(self.cache.hits)
            folder = self.cache.get(step, key, compute)
            record["cached"] = len(self.cache.hits) > hits
        return folder

    def cached_arrays(
        self, step: str, key: str, *, names: tuple[str, ...], compute: Callable[[], tuple[np.ndarray, ...]]
    ) -> list[np.ndarray]:
        """A cached step whose outputs are named arrays: computed and saved on a miss, loaded either way."""
        return self.cached_arrays_with_scratch(step, key, names=names, compute=lambda _: compute())

    def cached_arrays_with_scratch(
        self, step: str, key: str, *, names: tuple[str, ...], compute: Callable[[Path], tuple[np.ndarray, ...]]
    ) -> list[np.ndarray]:
        """``cached_arrays`` whose computation gets a scratch folder inside the entry being built (the
        files its tasks share; seen by every worker that sees the cache, gone once the entry is complete)."""

        def build(folder: Path) -> None:
            scratch = folder / "scratch"
            values = compute(scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            for name, value in zip(names, values, strict=True):
                np.save(folder / f"{name}.npy", value, allow_pickle=False)

        folder = self.cached(step, key, build)
        return [np.load(folder / f"{name}.npy", allow_pickle=False) for name in names]
