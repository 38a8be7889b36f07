"""Ray with several nodes, on this machine (``ray.cluster_utils.Cluster``: a head and two worker nodes,
each its own raylet and workers): dedup's tasks spread over the nodes and the result is the local
process pool's, written to object storage (a real S3-compatible server); then a worker node is lost in
the middle of the map and its tasks are rerun on the others, with the same result and nothing left
half-written."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from memguard.common.cache import Cache
from memguard.common.storage import filesystem
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.dedup.executor import ExecutorConfig, run_parts
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.dedup.stages.map import MapParams, _part_jobs
from tests.conftest import write_picture_shards

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray at a time, never in the fast suite

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402  (after the skip: Ray is an optional extra)

SHARDS = 6
PARAMS = DedupParams(shard_size=16)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, list[Any]]]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.shutdown()  # another module's single-node instance, if one is still up in this worker
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False)
    try:
        yield nodes, workers
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six shards, each picture (with its caption) in two of them: every shard has duplicates elsewhere."""
    listing = [
        [(f"s{s}-{i:02d}", (s * 10 + i) % 60, f"a random picture, number {(s * 10 + i) % 60}") for i in range(20)]
        for s in range(SHARDS)
    ]
    return write_picture_shards(tmp_path_factory.mktemp("shards"), listing, 40)


def _manifest(shards: Path, out: str, cache: Path, executor: ExecutorConfig) -> list[dict[str, Any]]:
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(shards)), cache)
    result = run_dedup(corpus, PARAMS, out_dir=out, cache=Cache(cache), executor=executor)
    assert result.stats["steps"]["map"]["parts"] == SHARDS
    if out.startswith("s3://"):
        fs, path = filesystem(result.manifest)
        fs.invalidate_cache()
        with fs.open(path, "rb") as fh:
            return pq.read_table(fh).to_pylist()
    return pq.read_table(result.manifest).to_pylist()


def node_of_task(seconds: float) -> str:
    time.sleep(seconds)
    return str(ray.get_runtime_context().get_node_id())


def test_three_nodes_share_the_work_and_give_the_local_result(
    cluster: tuple[Cluster, list[Any]], shards: Path, s3_env: dict[str, str], tmp_path: Path
) -> None:
    on_ray = ExecutorConfig(kind="ray", address=cluster[0].address)
    used = set(run_parts(node_of_task, [(1.0,)] * 6, on_ray))
    assert len(used) == 3  # six one-second tasks on three one-CPU nodes: each node ran some

    expected = _manifest(shards, str(tmp_path / "local"), tmp_path / "local-cache", ExecutorConfig(workers=1))
    fs, _ = filesystem("s3://clean")
    fs.mkdir("clean")
    got = _manifest(shards, "s3://clean/run", tmp_path / "ray-cache", on_ray)
    assert str(got) == str(expected)  # str: NaN similarities compare equal
    assert sum(r["status"] == "duplicate" for r in expected) >= 40


def slow_map(started: str, *job: Any) -> bool:
    """A map task that says where it runs, then takes long enough for its node to be lost under it."""
    import memguard.dedup.stages.map as shardmap

    Path(started, f"{ray.get_runtime_context().get_node_id()}-{time.time_ns()}").touch()
    time.sleep(3)
    return shardmap._map_into_cache(*job)


def test_a_lost_node_s_tasks_are_rerun_on_the_others(
    cluster: tuple[Cluster, list[Any]], shards: Path, s3_env: dict[str, str], tmp_path: Path
) -> None:
    nodes, workers = cluster
    victim = workers[0]
    on_ray = ExecutorConfig(kind="ray", address=nodes.address, max_retries=3)
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(shards)), tmp_path / "cache")
    map_params = MapParams(corpus.limits, corpus.captions, PARAMS.minhash, PARAMS.embedder, PARAMS.local.features)
    cache = Cache(tmp_path / "cache")
    jobs = _part_jobs(corpus, map_params, cache)[2]
    started = tmp_path / "started"
    started.mkdir()
    outcome: dict[str, object] = {}

    def map_all() -> None:
        try:
            outcome["computed"] = run_parts(slow_map, [(str(started), *job) for job in jobs], on_ray)
        except BaseException as err:  # reported by the assertion below
            outcome["error"] = err

    runner = threading.Thread(target=map_all)
    runner.start()
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(victim.node_id) for p in started.iterdir()):
        assert time.monotonic() < deadline, "no task started on the node to be lost"
        time.sleep(0.1)
    nodes.remove_node(victim, allow_graceful=False)  # its raylet and workers killed mid-task
    runner.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["computed"] == [True] * SHARDS  # every part computed, the lost ones on another node
    ran_on = {p.name.split("-")[0] for p in started.iterdir()}
    assert victim.node_id in ran_on and len(ran_on) >= 2
    assert not list((tmp_path / "cache" / "map").glob("*.partial"))  # the rerun took over what it left

    fs, _ = filesystem("s3://lost")
    fs.mkdir("lost")
    expected = _manifest(shards, str(tmp_path / "local"), tmp_path / "local-cache", ExecutorConfig(workers=1))
    again = _manifest(shards, "s3://lost/run", tmp_path / "cache", on_ray)  # the map entries are reused
    assert str(again) == str(expected)
