"""The apply stage's manifest and removal list, written by tasks over ranges of units: the same tables
whether one task in the calling process writes them or many in a worker pool do, with rejected units,
cross-part key repeats and duplicates across parts among the rows."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import memguard.dedup.outputs.manifest_tasks as manifest_tasks
from memguard.common.cache import Cache
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.dedup.executor import ExecutorConfig
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from tests.conftest import add_member, encode, random_rgb

OUTPUTS = ("manifest.parquet", "removals.parquet", "clusters.parquet")


def _shards(folder: Path) -> Path:
    """Three shards: pictures repeated within and across shards (some under the same caption), a member
    that is not an image, and a key that an earlier shard already holds."""
    folder.mkdir()
    for s in range(3):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for i in range(14):
                seed = (s * 14 + i) % 9  # nine pictures, each several times
                add_member(tar, f"s{s}-{i:02d}.png", encode(random_rgb(seed, 32)))
                add_member(tar, f"s{s}-{i:02d}.txt", f"picture number {seed} of a test".encode())
            add_member(tar, f"s{s}-bad.png", b"not an image")
            add_member(tar, f"s{s}-bad.txt", b"a broken picture")
            if s:
                add_member(tar, "s0-00.png", encode(random_rgb(100 + s, 32)))  # the key of shard 0's first sample
                add_member(tar, "s0-00.txt", b"a repeated key")
    return folder


def _tables(out: Path) -> dict[str, pa.Table]:
    return {name: pq.read_table(out / name) for name in OUTPUTS}


def _assert_same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema) and a.num_rows == b.num_rows
    for name in a.column_names:
        if pa.types.is_floating(a.schema.field(name).type):
            np.testing.assert_array_equal(a.column(name).to_numpy(), b.column(name).to_numpy())  # NaN where NaN
        else:
            assert a.column(name).to_pylist() == b.column(name).to_pylist(), name


@pytest.mark.parametrize("policy", ["remove", "reweight"])
def test_manifest_tasks_write_the_tables_of_one_task(
    policy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(_shards(tmp_path / "in"))), tmp_path / "cache")
    cache = Cache(tmp_path / "cache")
    params = DedupParams(policy=policy, write_shards=False)
    run_dedup(corpus, params, out_dir=tmp_path / "one", cache=cache, executor=ExecutorConfig(workers=1))
    monkeypatch.setattr(manifest_tasks, "UNITS_PER_TASK", 4)  # 15 or 16 units a shard: 12 tasks, none across two
    run_dedup(corpus, params, out_dir=tmp_path / "many", cache=cache, executor=ExecutorConfig(workers=2))
    first, second = _tables(tmp_path / "one"), _tables(tmp_path / "many")
    for name in OUTPUTS:
        _assert_same(first[name], second[name])
    manifest = first["manifest.parquet"].to_pylist()
    assert len(manifest) == 15 + 16 + 16  # 14 pictures and a broken one a shard, and 2 repeated keys
    reasons = {r["reason"] for r in manifest if r["status"] == "rejected"}
    assert reasons == {"undecodable", "duplicate_key"}
    if policy == "remove":  # nine pictures: each kept once, its other copies name that keeper's key
        kept = {r["key"] for r in manifest if r["status"] == "kept"}
        removed = [r for r in manifest if r["status"] == "duplicate"]
        assert len(removed) == 42 - 9 and {r["duplicate_of"] for r in removed} <= kept
        assert first["removals.parquet"].column("key").to_pylist() == [r["key"] for r in removed]
    stats = [json.loads((tmp_path / out / "stats.json").read_text()) for out in ("one", "many")]
    assert all(s.pop("steps") and s.pop("cache") for s in stats) and stats[0] == stats[1]
    assert not any((tmp_path / "cache" / "scratch").iterdir())  # the tasks' files are gone


def test_unit_ranges_cut_parts_and_never_span_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_tasks, "UNITS_PER_TASK", 4)
    assert manifest_tasks.unit_ranges([10, 0, 3, 4]) == [(0, 4), (4, 8), (8, 10), (10, 13), (13, 17)]
