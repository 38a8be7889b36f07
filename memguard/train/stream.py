"""Training batches streamed from webdataset shards (local or remote), for corpora too large to decode into
one memmap: start-up does not grow with the corpus, memory is bounded by the shuffle buffer.

The stream, as webdataset and the diffusers training scripts build it: each epoch a seeded permutation
of the shards, split by process (``rank``) and then by DataLoader worker ("slot"); each slot reads its
shards with memguard's reader (every unusable unit skipped, as dedup's manifest already recorded it),
repeats each sample by its ``sampling_weight`` (floor, plus one more with the fractional part's
probability: expected presentations ∝ weight), and shuffles through a seeded buffer of raw samples.
Decoding, the random crop and flip happen after the buffer.

Exact resume: global batch ``b`` is the ``b // W``-th batch of slot ``b % W`` (W = max(1, workers)), so a
run resumed at batch ``s`` replays each slot's stream up to its first batch, skipping without decoding,
and then yields exactly the batches of an uninterrupted run. The order depends on the number of
processes and workers: resume with the same ones. Replaying costs reading up to the resume point once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from memguard.common import storage
from memguard.common.processes import die_with_parent
from memguard.corpus.readers import read_tar
from memguard.corpus.sample import Sample
from memguard.corpus.validate import Invalid, decode_image
from memguard.diffusion.images import square_resize
from memguard.train.data import Batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamOptions:
    shuffle_buffer: int = 1000
    workers: int = 0
    random_crop: bool = False  # short side to the resolution, then a random square (else the centre one)
    random_flip: bool = False


def _shuffled(items: Iterator[Sample], size: int, rng: np.random.Generator) -> Iterator[Sample]:
    """A seeded shuffle buffer over an endless stream (webdataset's ``shuffle``, made reproducible)."""
    buffer: list[Sample] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        buffer[j], item = item, buffer[j]
        yield item
    yield from buffer  # only reached if the stream ends (it does not: epochs repeat)


def _view(rgb: np.ndarray, resolution: int, *, random_crop: bool, flip: bool, rng: np.random.Generator) -> np.ndarray:
    if random_crop:
        h, w = rgb.shape[:2]
        scale = resolution / min(h, w)
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        image = Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS)
        left = int(rng.integers(size[0] - resolution + 1))
        top = int(rng.integers(size[1] - resolution + 1))
        out = np.asarray(image.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)
    else:
        out = square_resize(rgb, resolution)
    return out[:, ::-1] if flip and rng.random() < 0.5 else out


class ShardStream(torch.utils.data.IterableDataset[Batch]):
    """One process's batches ``start, start+1, …`` of ``size`` samples (run under a DataLoader)."""

    def __init__(self, data: StreamData, *, start: int, size: int, rank: int, world: int) -> None:
        self.data, self.start, self.size, self.rank, self.world = data, start, size, rank, world

    def _samples(self, slot: int, slots: int) -> Iterator[Sample]:
        d = self.data
        weigh = np.random.default_rng([d.seed, self.rank, slot, 2])

        def raw() -> Iterator[Sample]:
            for epoch in itertools.count():
                order = np.random.default_rng([d.seed, epoch]).permutation(len(d.shards))
                mine = order[self.rank :: self.world][slot::slots]
                if not len(mine):
                    raise ValueError(
                        f"{len(d.shards)} shards cannot feed {self.world} processes x {slots} loader workers: "
                        "write smaller shards or use fewer workers"
                    )
                found = 0
                for i in mine:
                    for item in read_tar(d.shards[i]):
                        if isinstance(item, Sample):
                            found += 1
                            weight = float(item.meta.get("sampling_weight", 1.0))
                            copies = int(weight) + int(weigh.random() < weight - int(weight))
                            for _ in range(copies):
                                yield item
                if not found:
                    raise ValueError(f"no readable samples in the shards of process {self.rank}, slot {slot}")

        return _shuffled(raw(), d.options.shuffle_buffer, np.random.default_rng([d.seed, self.rank, slot, 1]))

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        slots, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        first = self.start + worker  # the first batch this worker yields; its slot is first % slots
        slot = first % slots
        samples = self._samples(slot, slots)
        for _ in itertools.islice(samples, (first // slots) * self.size):
            pass  # replay to the resume point: read, never decode
        number = first
        while True:
            rng = np.random.default_rng([self.data.seed, self.rank, number, 3])
            pixels: list[np.ndarray] = []
            captions: list[str] = []
            alts: list[list[str]] = []
            while len(pixels) < self.size:
                sample = next(samples)
                try:
                    rgb = decode_image(sample.image)
                except Invalid as err:  # dedup's manifest has the row; training only skips it
                    log.warning("skipping %s: %s", sample.key, err)
                    continue
                view = _view(
                    rgb,
                    self.data.resolution,
                    random_crop=self.data.options.random_crop,
                    flip=self.data.options.random_flip,
                    rng=rng,
                )
                pixels.append(view)
                captions.append(sample.caption)
                alts.append([str(c) for c in sample.meta.get("captions", []) if c != sample.caption])
            batch = np.stack(pixels).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
            yield Batch(batch, captions, alts)
            number += slots


def _die_with_parent(_: int) -> None:  # DataLoader's worker_init_fn takes the worker id
    die_with_parent()


class StreamData:
    """Training data read from shards as it is needed (``train.data=stream``)."""

    def __init__(self, shards: list[str], *, resolution: int, seed: int, options: StreamOptions) -> None:
        if not shards:
            raise FileNotFoundError("no shards to stream")
        self.shards, self.resolution, self.seed, self.options = shards, resolution, seed, options

    def batches(self, start: int, size: int, *, rank: int, world: int) -> Iterator[Batch]:
        stream = ShardStream(self, start=start, size=size // world, rank=rank, world=world)
        workers = self.options.workers
        loader: Any = torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=_die_with_parent if workers else None,
        )
        return iter(loader)

    def vocabulary_captions(self) -> list[str]:
        """From the ``.keys.parquet`` dedup writes beside each shard; without them, one pass over the
        shards' captions (the random-token mitigations only)."""
        keys = [u.rsplit(".", 1)[0] + ".keys.parquet" for u in self.shards]
        if all(storage.exists(k) for k in keys):
            out: list[str] = []
            for k in keys:
                with storage.open_binary(k) as fh:
                    out.extend(pq.read_table(fh, columns=["caption"]).column("caption").to_pylist())
            return out
        log.info("no .keys.parquet beside the shards: reading every caption once for the token vocabulary")
        return [s.caption for u in self.shards for s in read_tar(u) if isinstance(s, Sample)]

    def prompts(self, n: int) -> list[str]:
        found = (s.caption for u in self.shards for s in read_tar(u) if isinstance(s, Sample))
        return list(itertools.islice(found, n))
