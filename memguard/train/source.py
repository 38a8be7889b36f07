"""Which training data an arm reads (``train.data``): the decoded memmap or the shard stream, and what
identifies its content for the training cache key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memguard.common import storage
from memguard.corpus.discover import expand_urls
from memguard.diffusion.images import load_image_set
from memguard.train.config import TrainConfig
from memguard.train.data import MemmapData, TrainingData
from memguard.train.stream import StreamData, StreamOptions

GIB = 1 << 30


def shard_bytes(urls: list[str]) -> int:
    return sum(storage.stat_key(u)[1] for u in urls)


def open_training_data(
    shards: str, *, resolution: int, cfg: TrainConfig, cache_dir: str | Path
) -> tuple[TrainingData, list[Any]]:
    """(data, content): ``content`` is what the trained weights depend on besides the configs — the
    decoded samples for the memmap, the shards' identities (size and mtime or ETag) for the stream."""
    urls = expand_urls(shards)
    if not urls:
        raise FileNotFoundError(f"no shards match {storage.redact(shards)!r}")
    stream = cfg.data == "stream" or (cfg.data == "auto" and shard_bytes(urls) > cfg.memmap_max_gib * GIB)
    if stream:
        options = StreamOptions(cfg.shuffle_buffer, cfg.loader_workers, cfg.random_crop, cfg.random_flip)
        data = StreamData(urls, resolution=resolution, seed=cfg.seed, options=options)
        return data, ["stream", [storage.stat_key(u) for u in urls]]
    if cfg.random_crop:
        raise ValueError("train.random_crop needs train.data=stream (the memmap holds centre crops)")
    images = load_image_set(shards, resolution, cache_dir)
    return MemmapData(images, cfg.seed, random_flip=cfg.random_flip), [
        images.keys,
        images.captions,
        images.weights.tolist(),
    ]
