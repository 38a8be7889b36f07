"""Shard write → read round trip, determinism, atomicity, and webdataset's own reader agreeing."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from memguard.common.atomic import atomic_path, write_bytes
from memguard.corpus.readers import read_folder, read_shards
from memguard.corpus.sample import Reason, Rejection, Sample
from memguard.corpus.writer import ShardWriter
from tests.conftest import encode, random_rgb


def _samples(n: int) -> list[Sample]:
    return [
        Sample(f"key{i:04d}-é", f"caption {i} ✓", encode(random_rgb(i), "PNG"), "test", "png", {"i": i, "url": "x"})
        for i in range(n)
    ]


def _write(folder: Path, samples: list[Sample], max_count: int) -> list[Path]:
    with ShardWriter(folder, max_count) as writer:
        for s in samples:
            writer.write(s)
    return writer.shards


def test_round_trip_preserves_bytes_captions_and_meta(tmp_path: Path) -> None:
    samples = _samples(7)
    shards = _write(tmp_path, samples, max_count=3)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    back = list(read_shards(str(tmp_path)))
    assert all(isinstance(b, Sample) for b in back)
    assert [(b.key, b.caption, b.image, b.meta) for b in back] == [(s.key, s.caption, s.image, s.meta) for s in samples]
    keys = pq.read_table(tmp_path / "shard-000001.keys.parquet").column("key").to_pylist()
    assert keys == [s.key for s in samples[3:6]]


def test_two_runs_write_byte_identical_shards(tmp_path: Path) -> None:
    samples = _samples(5)
    a = _write(tmp_path / "a", samples, 2)
    b = _write(tmp_path / "b", samples, 2)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in a]
    assert digest == [hashlib.sha256(p.read_bytes()).hexdigest() for p in b]


def test_webdataset_reads_our_shards(tmp_path: Path) -> None:
    samples = _samples(4)
    _write(tmp_path, samples, 10)
    dataset = wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False)
    got = [(s["__key__"], s["txt"].decode(), s["png"]) for s in dataset]
    assert got == [(s.key, s.caption, s.image) for s in samples]


def test_failed_write_leaves_no_final_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, 10) as writer:
        writer.write(_samples(1)[0])
        raise RuntimeError("killed mid-shard")
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob("*.tmp"))


def test_disk_full_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    final = tmp_path / "manifest.parquet"
    write_bytes(final, b"old")
    with pytest.raises(OSError), atomic_path(final) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert final.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]


def test_folder_reader(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cat.jpg").write_bytes(encode(random_rgb(1), "JPEG"))
    (tmp_path / "sub" / "cat.txt").write_text("a cat")
    (tmp_path / "dog.png").write_bytes(encode(random_rgb(2)))
    (tmp_path / "dog.txt").write_text("a dog")
    (tmp_path / "dog.json").write_text('{"url": "u"}')
    (tmp_path / "orphan.txt").write_text("no image")
    (tmp_path / "evil.pth").write_bytes(b"\x80\x04")
    (tmp_path / "link.png").symlink_to(tmp_path / "dog.png")
    items = list(read_folder(tmp_path))
    samples = {i.key: i for i in items if isinstance(i, Sample)}
    assert set(samples) == {"sub__cat", "dog"} and samples["dog"].meta == {"url": "u"}
    reasons = sorted(i.reason for i in items if isinstance(i, Rejection))
    assert reasons == sorted([Reason.INCOMPLETE_SAMPLE, Reason.UNSAFE_MEMBER, Reason.NOT_REGULAR_FILE])
