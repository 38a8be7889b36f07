"""The one cache: completion marker, per-entry lock under concurrent runs, resumable entries, list/prune."""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path

import pytest

from memguard.common.cache import COMPLETE, VERSIONS, Cache, entries, entry_key, main, prune
from memguard.common.cache_steps import STEPS


def _slow_build(root: str, tag: str, log: str) -> str:
    def compute(folder: Path) -> None:
        with open(log, "a") as fh:
            fh.write(f"start {tag}\n")
        time.sleep(0.5)
        (folder / "value.txt").write_text(tag)

    return str(Cache(Path(root)).get("map", "k1", compute))


def test_concurrent_runs_build_an_entry_once_and_both_read_it(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        paths = pool.starmap(_slow_build, [(str(tmp_path), "a", str(log)), (str(tmp_path), "b", str(log))])
    assert paths[0] == paths[1]
    assert log.read_text().count("start") == 1  # the second waited for the lock, then hit
    assert (Path(paths[0]) / "value.txt").read_text() in ("a", "b")
    assert json.loads((Path(paths[0]) / COMPLETE).read_text())["version"] == VERSIONS["map"]


def test_failed_build_leaves_nothing_complete_and_restarts_clean(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def broken(folder: Path) -> None:
        (folder / "half.txt").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get("map", "k", broken)
    assert not cache.path("map", "k").exists()
    seen: list[list[str]] = []
    cache.get("map", "k", lambda folder: seen.append(sorted(p.name for p in folder.iterdir())))
    assert seen == [[]]  # not resumable: the partial folder was emptied


def test_resumable_build_continues_from_the_partial_folder(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def first(folder: Path) -> None:
        (folder / "checkpoint").write_text("step 4")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get("train", "k", first, resumable=True)
    found: list[str] = []
    cache.get("train", "k", lambda folder: found.append((folder / "checkpoint").read_text()), resumable=True)
    assert found == ["step 4"]
    assert cache.misses == ["train", "train"] and cache.hits == []
    cache.get("train", "k", lambda folder: None)
    assert cache.hits == ["train"]


def test_keys_carry_the_kind_version_and_their_upstream_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    images, train, corpus = (entry_key(kind, "same inputs") for kind in ("images", "train", "corpus"))
    monkeypatch.setitem(STEPS, "images", replace(STEPS["images"], version=STEPS["images"].version + 1))
    assert entry_key("images", "same inputs") != images
    assert entry_key("train", "same inputs") != train  # a model trained on the old decode is not reused
    assert entry_key("corpus", "same inputs") == corpus
    with pytest.raises(KeyError):
        entry_key("no-such-kind")


def test_list_and_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path)
    cache.get("map", "a", lambda f: (f / "x").write_bytes(b"1234"))
    cache.get("audit", "b", lambda f: None)
    with pytest.raises(RuntimeError):
        cache.get("train", "c", lambda f: (_ for _ in ()).throw(RuntimeError("killed")), resumable=True)
    assert main(["--root", str(tmp_path), "list"]) == 0
    listing = capsys.readouterr().out
    assert "map" in listing and "complete" in listing and "partial" in listing
    assert [e.kind for e in prune(tmp_path, partial=True)] == ["train"]
    monkeypatch.setitem(VERSIONS, "audit", VERSIONS["audit"] + 1)
    assert [e.kind for e in prune(tmp_path, stale=True)] == ["audit"]
    assert [e.kind for e in entries(tmp_path)] == ["map"]
    assert main(["--root", str(tmp_path), "prune", "--kind", "map"]) == 0
    assert entries(tmp_path) == []


def test_atomic_writes_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    import os
    import stat

    from memguard.common.atomic import write_json

    write_json(tmp_path / "a.json", {"x": 1})
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(plain).st_mode) and mode & stat.S_IRGRP
