"""The streaming loader: resume offsets, workers, weights, per-process shard split, start-up cost."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from memguard.corpus.sample import Sample
from memguard.corpus.writer import ShardWriter
from memguard.train.data import Batch
from memguard.train.stream import StreamData, StreamOptions
from tests.conftest import encode, random_rgb

N = 48


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Six shards of eight samples; sample i has sampling weight 0 (i % 8 == 0), 2 (i % 8 == 1) or 1."""
    folder = tmp_path_factory.mktemp("stream")
    with ShardWriter(folder, max_count=8) as writer:
        for i in range(N):
            weight = 0.0 if i % 8 == 0 else 2.0 if i % 8 == 1 else 1.0
            writer.write(Sample(f"s{i:03d}", f"caption {i}", encode(random_rgb(i, 20)), "t", "png"), weight)
    return [str(p) for p in writer.shards]


def _data(shards: list[str], workers: int = 0, **kw: object) -> StreamData:
    return StreamData(shards, resolution=8, seed=5, options=StreamOptions(shuffle_buffer=10, workers=workers, **kw))  # type: ignore[arg-type]


def _take(data: StreamData, start: int, count: int, size: int = 4, rank: int = 0, world: int = 1) -> list[Batch]:
    return list(itertools.islice(data.batches(start, size, rank=rank, world=world), count))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_yields_the_same_batches(shards: list[str], workers: int) -> None:
    data = _data(shards, workers)
    full = _take(data, 0, 9)
    for start in (1, 4, 7):
        resumed = _take(data, start, 9 - start)
        assert [b.captions for b in resumed] == [b.captions for b in full[start:]]
        assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(resumed, full[start:], strict=True))
    assert full[0].pixels.shape == (4, 3, 8, 8) and full[0].pixels.dtype == np.float32


def test_weights_shuffle_and_coverage(shards: list[str]) -> None:
    captions = [c for b in _take(_data(shards), 0, 60) for c in b.captions]  # 240 samples ≈ 4.6 epochs
    counts = Counter(int(c.split()[1]) for c in captions)
    assert not [i for i in counts if i % 8 == 0]  # weight 0: never trained on
    doubled = np.mean([counts[i] for i in range(N) if i % 8 == 1])
    single = np.mean([counts[i] for i in range(N) if i % 8 > 1])
    assert 1.6 < doubled / single < 2.4
    first_epochs = captions[: 2 * N]  # every sample within two epochs (the buffer delays some)
    assert {int(c.split()[1]) for c in first_epochs} == {i for i in range(N) if i % 8}
    assert captions[:8] != sorted(captions[:8], key=lambda c: int(c.split()[1]))  # shuffled


def test_processes_read_disjoint_shards(shards: list[str]) -> None:
    data = _data(shards)
    seen = [
        {c for b in _take(data, 0, 4, size=4, rank=r, world=2) for c in b.captions} for r in (0, 1)
    ]  # 8 samples each, within the first epoch of 24 per process
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    with pytest.raises(ValueError, match="cannot feed"):
        _take(_data(shards[:1]), 0, 1, size=2, rank=1, world=2)


def test_random_crop_and_flip_are_seeded(shards: list[str]) -> None:
    plain = _take(_data(shards), 0, 3)
    augmented = _take(_data(shards, random_crop=True, random_flip=True), 0, 3)
    again = _take(_data(shards, random_crop=True, random_flip=True), 0, 3)
    assert [b.captions for b in plain] == [b.captions for b in augmented]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(augmented, again, strict=True))
    assert any(not np.array_equal(a.pixels, b.pixels) for a, b in zip(plain, augmented, strict=True))


def test_vocabulary_and_prompts_come_from_the_keys_parquet(shards: list[str]) -> None:
    data = _data(shards)
    assert sorted(data.vocabulary_captions()) == sorted(f"caption {i}" for i in range(N))
    assert data.prompts(3) == ["caption 0", "caption 1", "caption 2"]
    assert Path(shards[0]).with_suffix(".keys.parquet").exists()
