"""The pair rule, centre clustering (no chains), the keeper rule, SemDeDup."""

from __future__ import annotations

import numpy as np

from dedup.decide.cluster import ClusterRule, PairScorer, cluster, merge_candidates
from dedup.decide.semdedup import SemDedupParams, semdedup


def _unit(angles_deg: list[float]) -> np.ndarray:
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _scorer(emb: np.ndarray, n: int) -> PairScorer:
    return PairScorer(emb, np.arange(n * 4, dtype=np.uint32).reshape(n, 4), np.ones(n, bool), np.arange(n))


def test_chain_of_lookalikes_is_split() -> None:
    # A~B and B~C pass the rule (cos 10° = 0.985), A~C does not (cos 20° = 0.94): no chain A–C.
    emb = _unit([0, 10, 20])
    pairs = np.array([[0, 1], [1, 2]])
    edges = merge_candidates(3, emb, pairs, np.array([0.985, 0.985]), np.zeros((0, 2), int), np.zeros(0), np.arange(3))
    found = cluster(
        3, edges, ClusterRule(image_threshold=0.98, loose_image_threshold=0.98), np.arange(3), _scorer(emb, 3)
    )
    # B is the centre (it matches both); A and C each match B directly and join it.
    assert found.labels.tolist() == [0, 0, 0]
    # A chain of four: the centre B takes A and C; D matches only C, never B, so it stays apart.
    emb2 = _unit([0, 10, 20, 30])
    pairs2 = np.array([[0, 1], [1, 2], [2, 3]])
    edges2 = merge_candidates(4, emb2, pairs2, np.ones(3, np.float32), np.zeros((0, 2), int), np.zeros(0), np.arange(4))
    found2 = cluster(
        4, edges2, ClusterRule(image_threshold=0.98, loose_image_threshold=0.98), np.arange(4), _scorer(emb2, 4)
    )
    assert found2.labels.tolist()[:3] == [0, 0, 0] and found2.labels[3] != found2.labels[0]
    assert found2.size.tolist() == [3, 3, 3, 1]


def test_keeper_is_best_ranked_and_signals_recorded() -> None:
    emb = _unit([0, 0.1, 0.2, 90])
    exact_groups = np.array([0, 0, 1, 2])
    edges = merge_candidates(
        4,
        emb,
        np.array([[0, 2], [1, 2]]),
        np.array([0.999, 0.999], np.float32),
        np.zeros((0, 2), int),
        np.zeros(0),
        exact_groups,
    )
    rank = np.array([2, 0, 1, 3])  # sample 1 ranks best (e.g. largest resolution)
    scorer = PairScorer(emb, np.zeros((4, 4), np.uint32), np.zeros(4, bool), exact_groups)
    found = cluster(4, edges, ClusterRule(), rank, scorer)
    assert found.keeper.tolist() == [1, 1, 1, 3]
    assert found.signal[1] == "keeper" and set(found.signal[[0, 2]]) <= {"exact_pixels", "image"}
    assert found.size.tolist() == [3, 3, 3, 1]


def test_caption_alone_never_joins() -> None:
    emb = _unit([0, 60])
    sig = np.zeros((2, 8), np.uint32)  # identical captions
    edges = merge_candidates(
        2, emb, np.zeros((0, 2), int), np.zeros(0), np.array([[0, 1]]), np.array([1.0]), np.arange(2)
    )
    found = cluster(2, edges, ClusterRule(), np.arange(2), PairScorer(emb, sig, np.ones(2, bool), np.arange(2)))
    assert found.labels[0] != found.labels[1]


def test_semdedup_removes_near_copies_only() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 8))
    x = np.concatenate([base, base[:10] + 1e-3 * rng.normal(size=(10, 8))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dup, score = semdedup(x, SemDedupParams(clusters=4, epsilon=0.01))
    removed = set(np.flatnonzero(dup >= 0).tolist())
    assert len(removed) == 10 and (score[dup >= 0] > 0.99).all()
    assert all(dup[i] < 0 for i in set(dup[dup >= 0].tolist()))  # duplicates point at kept rows
