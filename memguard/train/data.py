"""Where training batches come from: a decoded memmap (``MemmapData``, small corpora: every epoch is an
index lookup) or the shards themselves (``memguard.train.stream.StreamData``, any size). Both give batch ``b`` as a
pure function of (seed, b, process layout), so a resumed run draws the same batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from memguard.diffusion.images import ImageSet


@dataclass(frozen=True)
class Batch:
    pixels: np.ndarray  # float32 NCHW in [-1, 1]
    captions: list[str]
    alt_captions: list[list[str]]  # other captions of the same image (the MC mitigation)


class TrainingData(Protocol):
    def batches(self, start: int, size: int, *, rank: int, world: int) -> Iterator[Batch]:
        """Batches ``start, start+1, …`` of ``size`` samples over all processes; this process's share
        (``size / world`` samples) of each."""
        ...

    def vocabulary_captions(self) -> list[str]:
        """Captions whose words the random-token mitigation draws from."""
        ...

    def prompts(self, n: int) -> list[str]:
        """Fixed captions for the sample grids during training."""
        ...


class EpochSampler:
    """The stream of training samples is the concatenation of epochs, each a permutation (or, with
    non-uniform weights, a weighted draw with replacement of the same length) that is a pure function of
    (seed, epoch). Batch ``k`` is stream positions [k·B, (k+1)·B): resuming needs only the batch number."""

    def __init__(self, weights: np.ndarray, seed: int) -> None:
        if len(weights) == 0:
            raise ValueError("no training samples")
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("sampling weights must be finite, non-negative and not all zero")
        self.weights = weights / weights.sum()
        self.uniform = bool(np.allclose(weights, weights[0]))
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}

    def epoch(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, epoch])
            n = len(self.weights)
            order = rng.permutation(n) if self.uniform else rng.choice(n, size=n, replace=True, p=self.weights)
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = order
        return self._orders[epoch]

    def batch(self, number: int, batch_size: int) -> np.ndarray:
        positions = np.arange(number * batch_size, (number + 1) * batch_size)
        n = len(self.weights)
        epochs = positions // n
        out = np.empty(batch_size, dtype=np.int64)
        for e in np.unique(epochs):
            mask = epochs == e
            out[mask] = self.epoch(int(e))[positions[mask] % n]
        return out


class MemmapData:
    """Batches from a decoded ``ImageSet``: every process draws the whole batch's indices and keeps its
    slice, so the samples trained on do not depend on the number of processes."""

    def __init__(self, images: ImageSet, seed: int, *, random_flip: bool = False) -> None:
        self.images = images
        self.sampler = EpochSampler(images.weights, seed)
        self.seed, self.random_flip = seed, random_flip

    def batches(self, start: int, size: int, *, rank: int, world: int) -> Iterator[Batch]:
        number = start
        while True:
            index = self.sampler.batch(number, size)[rank::world]
            pixels = self.images.pixels(index)
            if self.random_flip:  # drawn for the whole batch, then sliced: independent of the process count
                flip = np.random.default_rng([self.seed, number, 3]).random(size)[rank::world] < 0.5
                pixels[flip] = pixels[flip][..., ::-1]
            yield Batch(
                pixels,
                [self.images.captions[i] for i in index],
                [self.images.alt_captions[i] for i in index],
            )
            number += 1

    def vocabulary_captions(self) -> list[str]:
        return self.images.captions

    def prompts(self, n: int) -> list[str]:
        return self.images.captions[:n]
