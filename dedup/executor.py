"""How the map stage runs (the ``executor`` config group)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from common.config import in_range, one_of

T = TypeVar("T")


@dataclass(frozen=True)
class ExecutorConfig:
    """kind: local — a process pool over the corpus's parts (shards) on this machine. workers: processes
    (0: every core this process may use). The result does not depend on either."""

    kind: str = "local"
    workers: int = 0

    def __post_init__(self) -> None:
        one_of("executor.kind", self.kind, ("local",))
        in_range("executor.workers", self.workers, 0)


def run_parts(function: Callable[..., T], jobs: Sequence[tuple[Any, ...]], workers: int) -> list[T]:
    """``function(*job)`` for every job, in a process pool when ``workers`` > 1, results in job order.

    Not fork: the caller may already run OpenMP threads (faiss, torch, numba), and a forked child of such a
    process can deadlock (GNU OpenMP refuses outright). A fork server that imported the dedup stages once
    starts each worker in milliseconds; each worker's compiled kernels use one thread (the pool is the
    parallelism)."""
    workers = min(workers or default_workers(), len(jobs))
    if workers <= 1:
        return [function(*job) for job in jobs]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dedup.shardmap", "dedup.outputs.shards"])
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        return list(pool.map(function, *zip(*jobs, strict=True)))


def _one_thread() -> None:
    import numba

    numba.set_num_threads(1)


def default_workers() -> int:
    return len(os.sched_getaffinity(0))
