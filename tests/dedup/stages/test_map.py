"""The map stage: one cache entry per shard, a process pool that does not change the result, a killed run
that recomputes only the shards it had not finished, a changed shard that recomputes only itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from memguard.common.cache import COMPLETE, Cache
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.dedup.executor import SMALL_WORK_BYTES, ExecutorConfig, default_workers, run_parts
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from tests.conftest import TINY_TWEMOJI, add_member, encode, random_rgb, write_picture_shards

REPO = Path(__file__).resolve().parents[3]


def _manifest(path: Path) -> list[dict[str, object]]:
    rows = pq.read_table(path / "manifest.parquet").to_pylist()
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]


def test_workers_do_not_change_the_result(cache_dir: Path, tmp_path: Path) -> None:
    corpus = open_corpus(CorpusSpec(twemoji=TINY_TWEMOJI), cache_dir)
    one, two = (
        run_dedup(
            corpus,
            DedupParams(shard_size=40),
            out_dir=tmp_path / str(workers),
            cache=Cache(tmp_path / f"c{workers}"),
            executor=ExecutorConfig(workers=workers),
        )
        for workers in (1, 2)
    )
    assert _manifest(tmp_path / "1") == _manifest(tmp_path / "2")
    assert one.stats["steps"]["map"]["parts"] == two.stats["steps"]["map"]["parts"] >= 3
    shards = sorted((tmp_path / "1" / "shards").glob("*.tar"))
    assert shards and all(p.read_bytes() == (tmp_path / "2" / "shards" / p.name).read_bytes() for p in shards)


def test_a_small_corpus_stays_in_this_process_unless_workers_are_set() -> None:
    jobs = [(), (), ()]
    assert run_parts(os.getpid, jobs, ExecutorConfig(), work_bytes=SMALL_WORK_BYTES - 1) == [os.getpid()] * 3
    pooled = run_parts(os.getpid, jobs, ExecutorConfig(workers=2), work_bytes=SMALL_WORK_BYTES - 1)
    assert os.getpid() not in pooled
    if default_workers() > 1:
        assert os.getpid() not in run_parts(os.getpid, jobs, ExecutorConfig(), work_bytes=SMALL_WORK_BYTES)


def test_a_failed_part_stops_the_pool_without_a_second_traceback() -> None:
    """The first part fails while most others still wait for a worker: its error is what the caller gets,
    and the pool's own thread raises nothing (a traceback there is printed beside the one-line error)."""
    thread_errors: list[BaseException | None] = []
    # Set here, not by a fixture: pytest installs its own hook for the test's call, over any fixture's.
    pytests_hook, threading.excepthook = threading.excepthook, lambda hook: thread_errors.append(hook.exc_value)
    try:
        for _ in range(5):  # the race this guards against lost 16 of 20 tries with Executor.map
            jobs = [(-1.0,)] + [(0.2,)] * 20  # time.sleep(-1) fails at once; each other part takes 0.2 s
            with pytest.raises(ValueError, match="non-negative"):
                run_parts(time.sleep, jobs, ExecutorConfig(workers=2))
    finally:
        threading.excepthook = pytests_hook
    assert thread_errors == []


def test_a_key_repeated_in_a_later_shard_is_a_duplicate_key(tmp_path: Path) -> None:
    for name, key in (("a.tar", "same"), ("b.tar", "other"), ("c.tar", "same")):
        with tarfile.open(tmp_path / name, "w") as tar:
            add_member(tar, f"{key}.png", encode(random_rgb(len(name) + ord(name[0]))))
            add_member(tar, f"{key}.txt", f"caption of {name}".encode())
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(tmp_path)), tmp_path / "cache")
    result = run_dedup(corpus, DedupParams(write_shards=False), out_dir=tmp_path / "out", cache=Cache(tmp_path / "c"))
    rows = pq.read_table(result.manifest).to_pylist()
    assert [(r["key"], r["reason"]) for r in rows] == [("same", ""), ("other", ""), ("same", "duplicate_key")]
    assert rows[2]["detail"] == f"first seen in {tmp_path / 'a.tar'}"


@pytest.fixture(scope="module")
def six_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shards = [
        [(f"k{n:06d}", n, f"random picture number {n}") for n in range(s * 1000, s * 1000 + 250)] for s in range(6)
    ]
    return write_picture_shards(tmp_path_factory.mktemp("six"), shards, 48)


def _cli(shards: Path, out: Path, cache: Path) -> subprocess.Popen[str]:
    args = ["corpus=shards", f"corpus.path={shards}", f"output={out}", f"cache_dir={cache}", "executor.workers=1"]
    env = {**os.environ, "WDS_SECURE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dedup", *args],
        cwd=out.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(cache: Path) -> int:
    """Map entries renamed into place (a ``.partial`` folder may hold the marker just before its rename)."""
    return sum(not p.parent.name.endswith(".partial") for p in cache.glob(f"map/*/{COMPLETE}"))


def _map_stats(out: Path) -> dict[str, object]:
    return json.loads((out / "stats.json").read_text())["steps"]["map"]  # type: ignore[no-any-return]


def test_killed_map_stage_recomputes_only_unfinished_shards(six_shards: Path, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for p in six_shards.glob("*.tar"):
        os.link(p, shards / p.name)
    cache = tmp_path / "cache"
    proc = _cli(shards, tmp_path / "out", cache)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and _finished(cache) < 2:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = _finished(cache)
    assert 2 <= finished < 6, f"the kill should land mid-map ({finished} of 6 shards finished)"
    resumed = _cli(shards, tmp_path / "out", cache)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read() if resumed.stderr else ""
    assert _map_stats(tmp_path / "out")["parts_computed"] == 6 - finished
    clean = _cli(shards, tmp_path / "clean", tmp_path / "clean-cache")
    assert clean.wait(timeout=300) == 0
    assert _manifest(tmp_path / "out") == _manifest(tmp_path / "clean")

    # One changed shard: only it is mapped again.
    (shards / "00003.tar").unlink()
    with tarfile.open(shards / "00003.tar", "w") as tar:
        add_member(tar, "new.png", encode(random_rgb(99, 48)))
        add_member(tar, "new.txt", b"a new sample")
    again = _cli(shards, tmp_path / "out2", cache)
    assert again.wait(timeout=300) == 0
    assert _map_stats(tmp_path / "out2")["parts_computed"] == 1


def test_every_tar_row_has_its_byte_offset(six_shards: Path, tmp_path: Path) -> None:
    """The manifest's offset is where the sample's first member header starts in its tar (kept, duplicate
    and rejected rows alike), so a row leads straight to its bytes."""
    shard = six_shards / "00000.tar"
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(shard)), tmp_path / "corpus")
    result = run_dedup(corpus, DedupParams(write_shards=False), out_dir=tmp_path / "out", cache=Cache(tmp_path / "c"))
    rows = pq.read_table(result.manifest).to_pylist()
    with tarfile.open(shard) as tar:
        first_member = {}
        for member in tar.getmembers():
            first_member.setdefault(member.name.split(".")[0], member.offset)
    assert len(rows) == 250 and [r["offset"] for r in rows] == [first_member[r["key"]] for r in rows]
    assert rows[0]["offset"] == 0
