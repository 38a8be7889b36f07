"""The record that flows from the decide step to the outputs: one entry per valid sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memguard.dedup.decide.edges import Edges


@dataclass(frozen=True, kw_only=True)
class Decision:
    """Arrays aligned with the valid samples (``sample_index`` order):

    labels: cluster id (0..C-1, singletons included); keeper: index of the cluster's keeper (itself for a
    keeper or singleton); size: the cluster's size; signal: the strongest signal that joined the sample to
    its cluster (``"keeper"`` for keepers of clusters of two or more, ``""`` for singletons); finite: the
    image embedding is finite (non-finite samples are rejected, never clustered); edges: the candidate
    edges the clustering accepted (none for SemDeDup, which clusters embeddings, not pairs).
    """

    labels: np.ndarray
    keeper: np.ndarray
    size: np.ndarray
    signal: np.ndarray
    finite: np.ndarray
    edges: Edges | None = None
    first: int = 0  # the sample index of the first entry (a slice of a run's decision: ``rows``)

    @property
    def removable(self) -> np.ndarray:
        """Samples that are not their cluster's keeper (duplicates under ``remove``)."""
        return (self.keeper != np.arange(self.first, self.first + len(self.keeper))) & self.finite
