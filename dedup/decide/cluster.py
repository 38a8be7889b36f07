"""Step 6, ``cluster``: a pair rule over the signals, connected components, a deterministic keeper.

Thresholds live here only, so a sweep over them reuses the cached signatures, embeddings and pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from common.config import in_range

SIGNALS = ("exact_pixels", "image", "caption+image", "caption_semantic+image")  # in order of strength


@dataclass(frozen=True)
class ClusterRule:
    """An edge joins two samples when any clause holds:

    exact pixels equal (if ``use_exact``); or image cosine ≥ ``image_threshold``; or caption Jaccard
    ≥ ``caption_threshold`` and image cosine ≥ ``loose_image_threshold`` (same caption, looser image
    match); or, when ``caption_semantic_threshold`` is set, caption-embedding cosine ≥ it and the same
    loose image match. A caption match alone never joins two samples: LAION has many different images
    captioned "image" or "photo".
    """

    image_threshold: float = 0.98
    caption_threshold: float = 0.7
    loose_image_threshold: float = 0.8
    use_exact: bool = True
    caption_semantic_threshold: float | None = None

    def __post_init__(self) -> None:
        in_range("image threshold (dedup.image.threshold)", self.image_threshold, -1.0, 1.0)
        in_range("loose image threshold (dedup.image.loose_threshold)", self.loose_image_threshold, -1.0, 1.0)
        in_range("caption threshold (dedup.caption.threshold)", self.caption_threshold, 0.0, 1.0)
        if self.caption_semantic_threshold is not None:
            in_range("dedup.caption.semantic.threshold", self.caption_semantic_threshold, -1.0, 1.0)


@dataclass(frozen=True)
class Edges:
    """Candidate edges before the rule: all arrays aligned with ``pairs`` (M, 2), i < j."""

    pairs: np.ndarray
    image_sim: np.ndarray
    caption_jaccard: np.ndarray  # NaN where the pair is not a caption candidate
    exact: np.ndarray  # bool
    caption_sim: np.ndarray  # caption-embedding cosine; NaN without the semantic signal or caption

    def subset(self, mask: np.ndarray) -> Edges:
        return Edges(
            self.pairs[mask], self.image_sim[mask], self.caption_jaccard[mask], self.exact[mask], self.caption_sim[mask]
        )


@dataclass(frozen=True)
class Clusters:
    labels: np.ndarray  # cluster id per sample (0..C-1), singletons included
    keeper: np.ndarray  # per sample: index of its cluster's keeper
    size: np.ndarray  # per sample: its cluster's size
    signal: np.ndarray  # per sample: strongest signal on an accepted edge touching it ("" if singleton)
    edges: Edges  # accepted edges


def _pair_cosines(vectors: np.ndarray | None, pairs: np.ndarray) -> np.ndarray:
    if vectors is None:
        return np.full(len(pairs), np.nan, np.float32)
    return np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]]).astype(np.float32)


def merge_candidates(
    n: int,
    *,
    embeddings: np.ndarray,
    image_pairs: np.ndarray,
    image_sims: np.ndarray,
    caption_pairs: np.ndarray,
    caption_jaccard: np.ndarray,
    exact_groups: np.ndarray,
    caption_embeddings: np.ndarray | None = None,
    semantic_pairs: np.ndarray | None = None,
) -> Edges:
    """Union of image, caption (MinHash and, optionally, semantic) and exact-hash candidates, each with
    every score filled in. ``caption_embeddings`` rows of unusable captions are NaN (scores stay NaN)."""
    exact_pairs = []
    order = np.argsort(exact_groups, kind="stable")
    same = np.flatnonzero(exact_groups[order][1:] == exact_groups[order][:-1])
    if len(same):
        exact_pairs.append(np.sort(np.stack([order[same], order[same + 1]], axis=1), axis=1))
    extra = [semantic_pairs.reshape(-1, 2)] if semantic_pairs is not None else []
    all_pairs = np.concatenate([image_pairs.reshape(-1, 2), caption_pairs.reshape(-1, 2), *extra, *exact_pairs]).astype(
        np.int64
    )
    if not len(all_pairs):
        empty = np.zeros(0, np.float32)
        return Edges(np.zeros((0, 2), np.int64), empty, empty, np.zeros(0, bool), empty)
    pairs = np.unique(all_pairs, axis=0)
    code = pairs[:, 0] * n + pairs[:, 1]
    sims = _pair_cosines(embeddings, pairs)
    jac = np.full(len(pairs), np.nan, np.float32)
    if len(caption_pairs):
        cap_code = caption_pairs[:, 0] * n + caption_pairs[:, 1]
        pos = np.searchsorted(code, cap_code)
        jac[pos] = caption_jaccard
    exact = exact_groups[pairs[:, 0]] == exact_groups[pairs[:, 1]]
    return Edges(pairs, sims, jac, exact, _pair_cosines(caption_embeddings, pairs))


def _accept(
    exact: np.ndarray, image_sim: np.ndarray, jaccard: np.ndarray, caption_sim: np.ndarray, rule: ClusterRule
) -> np.ndarray:
    """Signal index per pair under the rule: 0 exact, 1 image, 2 caption+image, 3 caption_semantic+image,
    -1 rejected."""
    loose = image_sim >= rule.loose_image_threshold
    with np.errstate(invalid="ignore"):
        caption = (jaccard >= rule.caption_threshold) & loose
        semantic = (
            (caption_sim >= rule.caption_semantic_threshold) & loose
            if rule.caption_semantic_threshold is not None
            else np.zeros_like(caption)
        )
    image = image_sim >= rule.image_threshold
    exact = exact & rule.use_exact
    return np.where(exact, 0, np.where(image, 1, np.where(caption, 2, np.where(semantic, 3, -1))))


@dataclass(frozen=True)
class PairScorer:
    """Scores one sample against many directly: the same signals the candidates carry."""

    embeddings: np.ndarray
    signatures: np.ndarray
    usable: np.ndarray
    exact_groups: np.ndarray
    caption_embeddings: np.ndarray | None = None

    def __call__(self, i: int, others: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        sims = self.embeddings[others] @ self.embeddings[i]
        jac = (self.signatures[others] == self.signatures[i]).mean(axis=1)
        jac = np.where(self.usable[others] & self.usable[i], jac, np.nan)
        cap = self.caption_embeddings
        cap_sims = cap[others] @ cap[i] if cap is not None else np.full(len(others), np.nan, np.float32)
        return self.exact_groups[others] == self.exact_groups[i], sims, jac, cap_sims

    def best_centre(self, members: np.ndarray, rule: ClusterRule) -> int:
        """Position of the member that meets the rule with the most others (first on ties)."""
        emb, sig, ok = self.embeddings[members], self.signatures[members], self.usable[members]
        sims = emb @ emb.T
        jac = (sig[:, None, :] == sig[None, :, :]).mean(axis=2)
        jac = np.where(ok[:, None] & ok[None, :], jac, np.nan)
        exact = self.exact_groups[members][:, None] == self.exact_groups[members][None, :]
        cap = self.caption_embeddings
        cap_sims = cap[members] @ cap[members].T if cap is not None else np.full_like(sims, np.nan)
        degree = (_accept(exact, sims, jac, cap_sims, rule) >= 0).sum(axis=1)
        return int(np.argmax(degree))


MEDOID_LIMIT = 512  # components larger than this pick centres by rank, not by an O(n²) search


def cluster(n: int, edges: Edges, *, rule: ClusterRule, rank: np.ndarray, scorer: PairScorer) -> Clusters:
    """Candidate components, then centre clustering inside each, so that every duplicate matches its
    cluster's centre *directly* — never only through a chain of look-alikes (A~B~C, A and C different).

    Inside a component the centre is the member that meets the rule with the most pending members (for a
    scraped image, its original sits between the variants); it takes every pending member that meets the
    rule with it, and the rest repeat. The keeper of a cluster — the sample that stays — is
    its best-ranked member (callers rank by largest resolution, then smallest key).
    """
    kept = edges.subset(_accept(edges.exact, edges.image_sim, edges.caption_jaccard, edges.caption_sim, rule) >= 0)
    graph = coo_matrix((np.ones(len(kept.pairs)), (kept.pairs[:, 0], kept.pairs[:, 1])), shape=(n, n))
    _, components = connected_components(graph, directed=False)
    centre = np.arange(n)
    signal = np.array([""] * n, dtype=object)
    order = np.lexsort((np.arange(n), rank))
    members_of: dict[int, list[int]] = {}
    for i in order:  # members listed best rank first
        members_of.setdefault(int(components[i]), []).append(int(i))
    for members in members_of.values():
        pending = np.asarray(members)
        while len(pending) > 1:
            pick = scorer.best_centre(pending, rule) if len(pending) <= MEDOID_LIMIT else 0
            leader = int(pending[pick])
            rest = np.delete(pending, pick)
            which = _accept(*scorer(leader, rest), rule)
            taken = rest[which >= 0]
            centre[taken] = leader
            signal[taken] = np.asarray(SIGNALS, dtype=object)[which[which >= 0]]
            pending = rest[which < 0]
    _, labels = np.unique(centre, return_inverse=True)
    size = np.bincount(labels)[labels]
    # The keeper is the best-ranked member of each cluster (rank order: first seen wins).
    keeper_of_label = np.full(labels.max() + 1 if n else 0, -1, dtype=np.int64)
    for i in order:
        if keeper_of_label[labels[i]] < 0:
            keeper_of_label[labels[i]] = i
    keeper = keeper_of_label[labels]
    # The centre matched every member; if the keeper is not the centre, the centre's own signal is
    # the one that matched the keeper.
    for i in np.flatnonzero((size > 1) & (centre == np.arange(n))):
        signal[i] = signal[keeper[i]] if keeper[i] != i else ""
    signal[keeper[size > 1]] = "keeper"
    return Clusters(labels, keeper, size, signal, kept)
