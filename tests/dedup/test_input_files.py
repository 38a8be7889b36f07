"""Inputs are files, not names: pipes are never opened, a folder's images are each a sample, a sidecar belongs
to one shard, a long thin image costs what a square one does (docs/RELIABILITY.md, third round)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from memguard.common import storage
from memguard.corpus.discover import find_shards
from memguard.corpus.metadata import sibling_parquet
from memguard.corpus.readers import read_folder, read_shards
from memguard.corpus.sample import Reason, Rejection, Sample
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.validate import Invalid, Limits, decode_image
from memguard.dedup.signals.robust import LONG_SIDE_CAP, WORK, RobustEmbedder
from tests.conftest import add_member, encode, random_rgb

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WDS_SECURE": "1"}


def _shard(path: Path, keys: list[str]) -> None:
    with tarfile.open(path, "w") as tar:
        for i, key in enumerate(keys):
            add_member(tar, f"{key}.png", encode(random_rgb(i + 7)))
            add_member(tar, f"{key}.txt", f"caption {key}".encode())


def _run_with_timeout(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """In a child process, so that a blocking open fails the test instead of hanging the suite."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_open_regular_refuses_a_named_pipe_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(storage.NotRegularFile, match="named pipe"):
        storage.open_regular(tmp_path / "pipe")
    with pytest.raises(storage.NotRegularFile, match="folder"):
        storage.open_regular(tmp_path)
    (tmp_path / "file").write_bytes(b"abc")
    with storage.open_regular(tmp_path / "file") as fh:
        assert fh.read() == b"abc"


@pytest.mark.parametrize("fifo", ["001.tar", "000.parquet", "metadata.jsonl"])
def test_a_pipe_named_like_an_input_is_a_row_not_a_hang(tmp_path: Path, fifo: str) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _shard(corpus / "000.tar", ["a", "b"])
    os.mkfifo(corpus / fifo)
    code = textwrap.dedent(f"""
        import json
        from memguard.corpus.readers import read_folder, read_shards
        from memguard.corpus.sample import Rejection
        read = read_folder if {fifo!r} == "metadata.jsonl" else read_shards
        items = list(read({str(corpus)!r}))
        print(json.dumps([[i.key, str(i.reason), i.detail] for i in items if isinstance(i, Rejection)]))
    """)
    proc = _run_with_timeout(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rejected = json.loads(proc.stdout)
    assert [r for r in rejected if r[1] == str(Reason.NOT_REGULAR_FILE) and "named pipe" in r[2]], rejected


def test_a_sidecar_belongs_to_exactly_one_shard(tmp_path: Path) -> None:
    assert sibling_parquet("/d/a.x.tar") == "/d/a.x.parquet" and sibling_parquet("/d/00001.tar.gz") == "/d/00001.parquet"
    assert sibling_parquet("s3://b/p/SHARD.TAR") == "s3://b/p/SHARD.parquet"
    _shard(tmp_path / "a.x.tar", ["x0", "x1"])
    _shard(tmp_path / "a.y.tar", ["y0", "y1"])
    pq.write_table(pa.table({"key": ["x0", "x1"], "caption": ["from x", "from x"]}), tmp_path / "a.x.parquet")
    items = list(read_shards(str(tmp_path)))
    assert sorted(i.key for i in items if isinstance(i, Sample)) == ["x0", "x1", "y0", "y1"]
    assert not [i for i in items if isinstance(i, Rejection)]
    assert len(items) == 4


def test_images_sharing_a_stem_are_each_a_sample(tmp_path: Path) -> None:
    cat_jpg, cat_png = random_rgb(1), random_rgb(2)
    (tmp_path / "cat.jpg").write_bytes(encode(cat_jpg, "JPEG", quality=95))
    (tmp_path / "cat.png").write_bytes(encode(cat_png))
    (tmp_path / "cat.txt").write_text("a cat")
    (tmp_path / "dog.png").write_bytes(encode(random_rgb(3)))
    (tmp_path / "dog.PNG").write_bytes(encode(random_rgb(4)))
    (tmp_path / "dog.txt").write_text("a dog")
    (tmp_path / "owl.png").write_bytes(encode(random_rgb(5)))
    (tmp_path / "owl.txt").write_text("an owl")
    samples = {i.key: i for i in read_folder(tmp_path) if isinstance(i, Sample)}
    assert sorted(samples) == ["cat_jpg", "cat_png", "dog_PNG", "dog_png", "owl"]
    assert samples["cat_jpg"].caption == samples["cat_png"].caption == "a cat"
    assert np.array_equal(decode_image(samples["cat_png"].image), np.asarray(cat_png))
    assert np.array_equal(decode_image(samples["dog_PNG"].image), np.asarray(random_rgb(4)))
    assert samples["dog_png"].caption == samples["dog_PNG"].caption == "a dog"


def test_local_globs_name_their_shards(tmp_path: Path) -> None:
    for name in ("b.tar", "a.tar", "c.tgz"):
        _shard(tmp_path / name, [name[0]])
    (tmp_path / "notes.txt").write_text("x")
    assert find_shards(str(tmp_path / "*.tar"))[0] == [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]
    assert find_shards(str(tmp_path / "{a,c}.t*"))[0] == [str(tmp_path / "a.tar"), str(tmp_path / "c.tgz")]
    with pytest.raises(FileNotFoundError, match=r"none matched|not found"):
        open_corpus(CorpusSpec(kind="shards", path=str(tmp_path / "*.zip")), tmp_path / "cache")


def _long_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG", optimize=True)
    return out.getvalue()


def test_an_extreme_aspect_ratio_is_rejected_on_the_header() -> None:
    with pytest.raises(Invalid) as err:
        decode_image(_long_png(8, 400))
    assert err.value.reason == Reason.EXTREME_ASPECT
    assert decode_image(_long_png(8, 400), Limits(max_aspect=60)).shape == (400, 8, 3)
    with pytest.raises(ValueError, match="max_aspect"):
        Limits(max_aspect=0.5)


def test_the_embedders_working_copy_of_a_long_image_is_capped() -> None:
    long_image = np.full((8, 100_000, 3), 120, np.uint8)  # a caller's array: no decoder limit in front of it
    long_image[:, ::7] = 30
    vectors = RobustEmbedder().embed([long_image, long_image.transpose(1, 0, 2)])
    assert vectors.shape[0] == 2 and np.isfinite(vectors).all()
    assert LONG_SIDE_CAP * WORK < 100_000 * WORK / 8


@pytest.mark.parametrize("size", [(8, 3_000_000), (3_000_000, 8)], ids=["8x3e6", "3e6x8"])
def test_a_long_thin_png_is_rejected_within_a_bounded_memory(tmp_path: Path, size: tuple[int, int]) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "long.png").write_bytes(_long_png(*size))
    (folder / "long.txt").write_text("a long thin image")
    (folder / "ok.png").write_bytes(encode(random_rgb(9)))
    (folder / "ok.txt").write_text("a square one")
    out, cache = tmp_path / "out", tmp_path / "cache"
    command = [sys.executable, "-m", "dedup", "corpus=folder", f"corpus.path={folder}", f"output={out}",
               f"cache_dir={cache}", "executor.workers=1"]  # fmt: skip
    # A parent of its own, so that its peak RSS over children is this run's alone.
    measure = textwrap.dedent(f"""
        import resource, subprocess, sys
        proc = subprocess.run({command!r}, capture_output=True, text=True)
        sys.stderr.write(proc.stderr)
        print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """)
    proc = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    code, peak_kib = map(int, proc.stdout.split())
    assert code == 0, proc.stderr[-2000:]
    rows = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert rows["long"]["reason"] == str(Reason.EXTREME_ASPECT) and rows["ok"]["status"] == "kept"
    assert peak_kib / 1024 < 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
