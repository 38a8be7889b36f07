"""SemDeDup (Abbas et al. 2023) as an alternative to the pair rule: spherical k-means on embeddings;
inside each cluster, items sorted by distance to the centroid, and an item is removed when its cosine
to an item kept before it exceeds 1 − ε (larger ε removes more)."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from memguard.common.config import in_range


@dataclass(frozen=True)
class SemDedupParams:
    clusters: int = 50
    iterations: int = 100
    epsilon: float = 0.05
    keep_hard: bool = True  # keep the items farthest from the centroid first (the paper's default)
    seed: int = 0

    def __post_init__(self) -> None:
        in_range("dedup.semdedup.clusters", self.clusters, lo=1)
        in_range("dedup.semdedup.iterations", self.iterations, lo=1)
        in_range("dedup.semdedup.epsilon", self.epsilon, lo=0.0, hi=2.0)


def semdedup(embeddings: np.ndarray, params: SemDedupParams) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate_of per row: -1 if kept, else the kept row it repeats; its cosine to that row)."""
    n, dim = embeddings.shape
    duplicate_of = np.full(n, -1, dtype=np.int64)
    score = np.zeros(n, dtype=np.float32)
    if n < 2:
        return duplicate_of, score
    k = max(1, min(params.clusters, n // 2))
    kmeans = faiss.Kmeans(dim, k, niter=params.iterations, spherical=True, seed=params.seed, verbose=False)
    kmeans.train(np.ascontiguousarray(embeddings))
    assert kmeans.index is not None and kmeans.centroids is not None
    _, assign = kmeans.index.search(np.ascontiguousarray(embeddings), 1)
    assign = assign.ravel()
    for c in range(k):
        members = np.flatnonzero(assign == c)
        if len(members) < 2:
            continue
        to_centroid = embeddings[members] @ kmeans.centroids[c]
        order = members[np.argsort(to_centroid if params.keep_hard else -to_centroid, kind="stable")]
        sims = embeddings[order] @ embeddings[order].T
        kept: list[int] = []
        for pos, row in enumerate(order):
            if kept:
                best = int(np.argmax(sims[pos, kept]))
                if sims[pos, kept[best]] > 1.0 - params.epsilon:
                    duplicate_of[row] = order[kept[best]]
                    score[row] = sims[pos, kept[best]]
                    continue
            kept.append(pos)
    return duplicate_of, score
