"""Shared fixtures: a tiny built-in corpus and helpers that write raw tar shards member by member."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist workers share the cores: one thread each (and in the processes they start), or torch's
    # and faiss's OpenMP threads oversubscribe the cores and spin. Set before torch, faiss or numba load.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["NUMBA_NUM_THREADS"] = "1"

import bz2
import gzip
import io
import lzma
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memguard.corpus.inject import InjectionConfig
from memguard.corpus.twemoji import TwemojiConfig

os.environ.setdefault("WDS_SECURE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def encode(image: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def random_rgb(seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_picture_shards(folder: Path, shards: list[list[tuple[str, int, str]]], size: int) -> Path:
    """One tar per list, ``00000.tar`` on: for each (key, picture seed, caption) a ``key.png`` of
    ``random_rgb(seed, size)`` and a ``key.txt``."""
    for s, samples in enumerate(shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for key, seed, caption in samples:
                add_member(tar, f"{key}.png", encode(random_rgb(seed, size)))
                add_member(tar, f"{key}.txt", caption.encode())
    return folder


def raw_members(path: Path) -> tuple[list[tuple[str, bytes]], bool]:
    """(name, type flag) of each member by walking raw 512-byte headers — independent of tarfile and
    of our reader — and whether the archive ends properly (complete data and a zero end block)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:3] == b"BZh":
        data = bz2.decompress(data)
    elif data[:6] == b"\xfd7zXZ\x00":
        data = lzma.decompress(data)
    pos, members, long_name = 0, [], None
    while pos + 512 <= len(data):
        header = data[pos : pos + 512]
        if header == b"\0" * 512:
            return members, True
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        kind = header[156:157]
        body_end = pos + 512 + size
        if body_end > len(data):
            return members, False
        if kind == b"x":  # PAX header: "len path=NAME\n" records name the next member
            for record in data[pos + 512 : body_end].decode("utf-8", "surrogateescape").splitlines():
                if " path=" in record:
                    long_name = record.split(" path=", 1)[1]
        else:
            name = long_name or header[:100].rstrip(b"\0").decode("utf-8", "surrogateescape")
            prefix = header[345:500].rstrip(b"\0").decode("utf-8", "surrogateescape")
            if prefix and not long_name:
                name = f"{prefix}/{name}"
            members.append((name, kind))
            long_name = None
        pos += 512 + (size + 511) // 512 * 512
    return members, False


def count_units(path: Path, unsafe: frozenset[str] = frozenset({"pyd", "pth"})) -> int:
    """Input units as the manifest must count them: runs of adjacent members sharing a key (the name up
    to the first dot of its file name) are one sample; each unusable member is one; a cut tail is one."""
    members, complete = raw_members(path)
    units, previous = 0, None
    for name, kind in members:
        base = name.rsplit("/", 1)[-1]
        if kind not in (b"0", b"\0") or "." not in base or base.split(".", 1)[1].lower() in unsafe:
            units, previous = units + 1, None
            continue
        key = name[: len(name) - len(base)] + base.split(".", 1)[0]
        ext = base.split(".", 1)[1]
        if previous is None or previous[0] != key or ext in previous[1]:
            units, previous = units + 1, (key, {ext})
        else:
            previous[1].add(ext)
    return units + (0 if complete else 1)


def build_tiny_clip(folder: Path) -> Path:
    """A randomly initialised CLIP small enough for tests, saved as a local folder (nothing downloaded)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    layers = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={**layers, "vocab_size": 99, "max_position_embeddings": 16},
        vision_config={**layers, "image_size": 30, "patch_size": 6},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    return folder


TINY_TWEMOJI = TwemojiConfig(
    resolution=16,
    subset=120,
    heldout_fraction=0.1,
    seed=3,
    shard_size=50,
    injection=InjectionConfig(fraction=0.1, min_count=2, max_count=16),
)


@pytest.fixture(autouse=True)
def _run_from_an_empty_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts in a fresh empty working directory, so none can depend on being started from the
    repo (README: the suite runs from any folder) or write scratch files into it."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


S3_SECRET = "not-a-real-secret-9f2c"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto's) on a free local port, and the environment that points s3fs at
    it; the environment is also set in this process for the session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "memguard-test",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield {**os.environ, **env, "WDS_SECURE": "1", "PYTHONUNBUFFERED": "1"}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
