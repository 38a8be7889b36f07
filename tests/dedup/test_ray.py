"""``executor=ray``: the same result as the local process pool, and a Ray worker killed mid-task is rerun
with an identical result. A real local Ray instance (a cluster of one node), not a mock."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from memguard.common.cache import Cache
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.dedup.executor import ExecutorConfig, run_parts
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from tests.conftest import write_picture_shards

# Under pytest-xdist, every test that starts a Ray instance runs in one worker (one instance at a time).
pytestmark = pytest.mark.xdist_group("ray")

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards; some pictures (with their captions) repeated within and across the shards."""

    def picture(shard: int, i: int) -> int:
        return i % 25 if shard == 0 else (i + 15) % 30  # pictures 15–24 in both shards

    shards = [
        [(f"s{s}-{i:03d}", picture(s, i), f"a random picture, number {picture(s, i)}") for i in range(40)]
        for s in range(2)
    ]
    return write_picture_shards(tmp_path_factory.mktemp("two"), shards, 40)


def _run(shards: Path, out: Path, executor: ExecutorConfig) -> list[dict[str, Any]]:
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(shards)), out / "corpus-cache")
    result = run_dedup(
        corpus, DedupParams(shard_size=16), out_dir=out / "out", cache=Cache(out / "cache"), executor=executor
    )
    assert result.stats["steps"]["map"]["parts"] == 2
    return pq.read_table(result.manifest).to_pylist()


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "out" / "shards").glob("*.tar"))}


def test_ray_gives_the_local_result(ray_cluster: None, two_shards: Path, tmp_path: Path) -> None:
    local = _run(two_shards, tmp_path / "local", ExecutorConfig(workers=2))
    on_ray = _run(two_shards, tmp_path / "ray", ExecutorConfig(kind="ray"))
    assert str(on_ray) == str(local)  # str: NaN similarities compare equal
    assert sum(r["status"] == "duplicate" for r in local) >= 40
    assert _shard_bytes(tmp_path / "ray") == _shard_bytes(tmp_path / "local")


def die_once_while_writing(marker: str, *job: Any) -> bool:
    """A map task whose worker is SIGKILLed on its first attempt, in the middle of writing the part's
    outputs (after its units were written, before its arrays): Ray must rerun it."""
    import memguard.dedup.stages.map as shardmap

    if not os.path.exists(marker):
        original = shardmap.np.save

        def save_then_die(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            Path(marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)

        shardmap.np.save = save_then_die  # type: ignore[assignment]
    return shardmap._map_into_cache(*job)


def test_a_killed_ray_worker_is_rerun_with_the_same_result(ray_cluster: None, two_shards: Path, tmp_path: Path) -> None:
    from memguard.dedup.stages.map import MapParams, _part_jobs

    expected = _run(two_shards, tmp_path / "local", ExecutorConfig(workers=1))
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(two_shards)), tmp_path / "corpus-cache")
    params = DedupParams()
    map_params = MapParams(corpus.limits, corpus.captions, params.minhash, params.embedder, params.local.features if params.local.enabled else None)
    cache = Cache(tmp_path / "killed" / "cache")
    jobs = _part_jobs(corpus, map_params, cache)[2]
    marker = tmp_path / "killed-once"
    computed = run_parts(die_once_while_writing, [(str(marker), *job) for job in jobs[:1]], ExecutorConfig(kind="ray"))
    assert marker.exists() and computed == [True]  # the first attempt died; the rerun computed the part
    again = _run(two_shards, tmp_path / "killed", ExecutorConfig(kind="ray"))
    assert str(again) == str(expected)
