"""The apply stage copies only what the map stage read: a shard swapped between the two stages stops the run
with nothing committed, instead of a clean corpus that disagrees with its manifest (docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

import memguard.dedup.stages.apply as apply_stage
from memguard.common.cache import Cache
from memguard.corpus.spec import CorpusSpec, InputChanged, open_corpus
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from tests.conftest import add_member, encode, random_rgb


def _bmp_shards(folder: Path) -> Path:
    """Two shards of equal size (uncompressed BMPs, captions padded alike), different keys and pictures."""
    folder.mkdir()
    for s, prefix in enumerate(("a", "b")):
        with tarfile.open(folder / f"{s:03d}.tar", "w") as tar:
            for i in range(6):
                add_member(tar, f"{prefix}{i}.bmp", encode(random_rgb(10 * s + i, 24), "BMP"))
                add_member(tar, f"{prefix}{i}.txt", f"picture {prefix} {i}".encode())
    assert (folder / "000.tar").stat().st_size == (folder / "001.tar").stat().st_size
    return folder


def _swap_before_apply(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> None:
    original = apply_stage.write_kept_shards

    def swapped_then_applied(*args: object, **kwargs: object) -> object:
        swap()
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(apply_stage, "write_kept_shards", swapped_then_applied)


@pytest.mark.parametrize("keep_stat", [False, True], ids=["new-mtime", "same-size-and-mtime"])
def test_a_shard_replaced_between_map_and_apply_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_stat: bool
) -> None:
    shards = _bmp_shards(tmp_path / "shards")
    target = shards / "001.tar"
    before = target.stat()

    def swap() -> None:  # as `os.replace` of a copy of 000.tar over 001.tar would
        copy = shards / ".incoming"
        shutil.copyfile(shards / "000.tar", copy)
        os.replace(copy, target)
        if keep_stat:  # the identity check alone cannot see this one: the keys check must
            os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))

    _swap_before_apply(monkeypatch, swap)
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(shards)), tmp_path / "cache")
    out = tmp_path / "out"
    with pytest.raises(InputChanged, match=r"001\.tar changed since it was mapped"):
        run_dedup(corpus, DedupParams(shard_size=4), out_dir=out, cache=Cache(tmp_path / "cache"))
    assert {p.name for p in out.iterdir()} <= {".lock"}  # nothing committed: no manifest, no shards, no stats


def test_an_unchanged_corpus_applies_as_before(tmp_path: Path) -> None:
    shards = _bmp_shards(tmp_path / "shards")
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(shards)), tmp_path / "cache")
    result = run_dedup(corpus, DedupParams(shard_size=4), out_dir=tmp_path / "out", cache=Cache(tmp_path / "cache"))
    assert result.stats["kept_samples"] == 12 and len(list((tmp_path / "out" / "shards").glob("*.tar"))) == 4
