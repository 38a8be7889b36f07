"""How the per-part stages (map and apply) run: the ``executor`` config group.

``local``: a process pool over the corpus's parts on this machine. ``ray``: one Ray task per part, on a
local Ray instance or a cluster (``executor.address=auto``). Of the global steps between the two stages,
a large image-neighbour search and caption LSH run as tasks on the executor too
(``signals/neighbor_tasks.py``, ``signals/lsh_tasks.py``), and so does writing a large manifest
(``outputs/manifest_tasks.py``); pair scoring and clustering run in the calling process. The result does not depend on the executor or the number of workers:
each part's output is a function of the part alone, and results are gathered in part order.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from memguard.common.config import in_range, one_of
from memguard.common.processes import die_with, interrupts_deferred, leave_interrupts_to_the_parent

T = TypeVar("T")


@dataclass(frozen=True)
class ExecutorConfig:
    """kind: local (a process pool on this machine) | ray (Ray tasks; ``pip install -e .[ray]``).
    workers: local — processes (0: every core this process may use, and none for a small corpus, where
    starting a pool costs more than it saves; a number: exactly that pool); ray — CPUs of the Ray
    instance started here (0: every core); ignored when joining a cluster. address: ray — "" starts a
    local Ray instance, "auto" joins the cluster this machine belongs to, "ray://head:10001" a remote
    one; every node must see the cache folder and the output (a shared filesystem or object storage) and
    have memguard installed.
    max_retries: ray — times a task is rerun after its worker died (a killed worker, a lost node)."""

    kind: str = "local"
    workers: int = 0
    address: str = ""
    max_retries: int = 3

    def __post_init__(self) -> None:
        one_of("executor.kind", self.kind, ("local", "ray"))
        in_range("executor.workers", self.workers, lo=0)
        in_range("executor.max_retries", self.max_retries, lo=0)
        if self.address and self.kind != "ray":
            raise ValueError(f"executor.address={self.address!r} needs executor.kind=ray")


# Below this much input a local run with the default worker count stays in this process: a pool's start
# (a fork server importing the stages, ~2 s here) outweighs what a second core saves (the map takes ~1 s
# of one core per 5 MB of 64-px JPEG samples: 881 µs and ~4.8 KB each, bench/RESULTS.md).
SMALL_WORK_BYTES = 8 << 20


def run_parts(
    function: Callable[..., T], jobs: Sequence[tuple[Any, ...]], executor: ExecutorConfig, *, work_bytes: int | None = None
) -> list[T]:
    """``function(*job)`` for every job, results in job order. ``function`` must be importable by name
    (a module-level function): workers import it rather than receive its code. ``work_bytes``: the input
    the jobs read, where known (under ``SMALL_WORK_BYTES`` and ``executor.workers`` = 0: no pool)."""
    if executor.kind == "ray":
        return _run_on_ray(function, jobs, executor)
    if not executor.workers and work_bytes is not None and work_bytes < SMALL_WORK_BYTES:
        return [function(*job) for job in jobs]
    return _run_in_pool(function, jobs, executor.workers)


def _run_in_pool(function: Callable[..., T], jobs: Sequence[tuple[Any, ...]], workers: int) -> list[T]:
    """In a process pool when more than one worker is useful.

    Not fork: the caller may already run OpenMP threads (faiss, torch, numba), and a forked child of such a
    process can deadlock (GNU OpenMP refuses outright). A fork server that imported the dedup stages once
    starts each worker in milliseconds; each worker's compiled kernels use one thread (the pool is the
    parallelism)."""
    workers = min(workers or default_workers(), len(jobs))
    if workers <= 1:
        return [function(*job) for job in jobs]
    context = multiprocessing.get_context("forkserver")
    # The fork server imports these before it starts serving: pool_worker first, so that every worker it
    # forks starts with Ctrl-C ignored (its own handler, restored in each child, is the one at that point).
    context.set_forkserver_preload(
        ["memguard.dedup.pool_worker", "memguard.dedup.stages.map", "memguard.dedup.outputs.shards"]
    )
    pool = None
    try:
        # Ctrl-C waits until the pool is up and every job submitted: interrupted halfway through its start,
        # a pool cannot be shut down cleanly (its queues' semaphores leak, and the resource tracker says so).
        with interrupts_deferred():
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_pool_worker, initargs=(os.getpid(),))
            # submit, not map: map's iterator cancels the waiting futures from this thread when it is
            # interrupted, racing the pool's own thread, which then fails to mark them broken
            # (InvalidStateError, printed as a traceback beside the one-line Ctrl-C message).
            futures = [pool.submit(function, *job) for job in jobs]
        results = [future.result() for future in futures]
    except BaseException:
        if pool is not None:
            _stop_workers(pool)
        raise
    pool.shutdown()
    return results


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Ctrl-C, or a part that failed: stop the other workers now instead of waiting for their parts (SIGTERM,
    which they exit on cleanly; SIGKILL for any still there after a few seconds). ProcessPoolExecutor has no
    public way to do this before Python 3.14's terminate_workers()."""
    processes = list(getattr(pool, "_processes", {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    # Quick now (the pool's thread has marked every waiting future broken); it releases the pool's own
    # semaphores. Not cancel_futures: the futures are the pool thread's to settle, not this thread's.
    pool.shutdown(wait=True)


def _run_on_ray(function: Callable[..., T], jobs: Sequence[tuple[Any, ...]], executor: ExecutorConfig) -> list[T]:
    """One Ray task per job, one CPU each. A task whose worker process died is rerun by Ray (up to
    ``max_retries``); an exception raised by ``function`` is not retried — it is a bug or bad data, and
    rerunning would not change it. Each part writes its outputs atomically, so a rerun task finds either
    nothing or a complete entry."""
    ray = _ray_session(executor)
    task = ray.remote(num_cpus=1, max_retries=executor.max_retries, retry_exceptions=False)(_in_ray_worker)
    return list(ray.get([task.remote(function, *job) for job in jobs]))


def _in_ray_worker(function: Callable[..., T], *job: Any) -> T:
    _one_thread()
    return function(*job)


def _ray_session(executor: ExecutorConfig) -> Any:
    """The Ray module, connected: to the cluster at ``address``, else to a Ray instance of ``workers``
    CPUs started in this process (kept for the next stage; Ray stops it at exit)."""
    try:
        import ray
    except ImportError as err:
        raise ValueError("executor=ray needs Ray: pip install -e '.[ray]'") from err
    if not ray.is_initialized():
        # Without it, Ray >= 2.50 writes an authentication token under the home folder.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if executor.address:
            ray.init(address=executor.address, log_to_driver=False)
        else:
            ray.init(num_cpus=executor.workers or default_workers(), include_dashboard=False, log_to_driver=False)
    return ray


def _one_thread() -> None:
    """A worker computes on one core: the pool (or Ray) is the parallelism."""
    import numba

    numba.set_num_threads(1)
    # faiss's OpenMP (a neighbour-search task): read when faiss loads, or set on it if it already has.
    os.environ["OMP_NUM_THREADS"] = "1"
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(1)


def _pool_worker(run: int) -> None:
    """A pool worker: one thread, ended with the run's process ``run`` (its parent is the fork server, which
    outlives the run while any worker does), and Ctrl-C left to the run."""
    leave_interrupts_to_the_parent()  # first: a Ctrl-C while this starts is the run's to report
    die_with(run)
    # numba's threading layer takes a lock of the default context when it starts: a fork server's would be
    # a named semaphore registered with the resource tracker, reported as leaked when a stopped worker
    # cannot release it. This worker starts no processes, so an unnamed (fork) one does the same job.
    multiprocessing.set_start_method("fork", force=True)
    _one_thread()


def default_workers() -> int:
    return len(os.sched_getaffinity(0))
