"""The training sample order: a pure function of (seed, batch number), so a resumed run draws the same
batches. Images come from ``diffusion.images``."""

from __future__ import annotations

import numpy as np


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
