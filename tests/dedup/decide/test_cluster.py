"""The pair rule, keeper selection (a clean kept set, no chains), the keeper rule, SemDeDup."""

from __future__ import annotations

import numpy as np

from memguard.dedup.decide.cluster import ClusterRule, PairScorer, cluster, merge_candidates
from memguard.dedup.decide.semdedup import SemDedupParams, semdedup


def _unit(angles_deg: list[float]) -> np.ndarray:
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _scorer(emb: np.ndarray, n: int) -> PairScorer:
    return PairScorer(emb, np.arange(n * 4, dtype=np.uint32).reshape(n, 4), np.ones(n, bool), np.arange(n))


def test_chain_of_lookalikes_is_split() -> None:
    # A~B and B~C pass the rule (cos 10° = 0.985), A~C does not (cos 20° = 0.94): no chain A–C.
    emb = _unit([0, 10, 20])
    pairs = np.array([[0, 1], [1, 2]])
    edges = merge_candidates(
        3,
        embeddings=emb,
        image_pairs=pairs,
        image_sims=np.array([0.985, 0.985]),
        caption_pairs=np.zeros((0, 2), int),
        caption_jaccard=np.zeros(0),
        exact_groups=np.arange(3),
    )
    found = cluster(
        3,
        edges,
        rule=ClusterRule(image_threshold=0.98, loose_image_threshold=0.98),
        rank=np.arange(3),
        scorer=_scorer(emb, 3),
    )
    # B matches both, so it is kept first; A and C each match B directly and join it.
    assert found.labels.tolist() == [0, 0, 0]
    # A chain of four: B (two matches, best rank) is kept and takes A and C; D matches only C, never B,
    # and C is removed, so D is kept.
    emb2 = _unit([0, 10, 20, 30])
    pairs2 = np.array([[0, 1], [1, 2], [2, 3]])
    edges2 = merge_candidates(
        4,
        embeddings=emb2,
        image_pairs=pairs2,
        image_sims=np.ones(3, np.float32),
        caption_pairs=np.zeros((0, 2), int),
        caption_jaccard=np.zeros(0),
        exact_groups=np.arange(4),
    )
    found2 = cluster(
        4,
        edges2,
        rule=ClusterRule(image_threshold=0.98, loose_image_threshold=0.98),
        rank=np.arange(4),
        scorer=_scorer(emb2, 4),
    )
    assert found2.labels.tolist()[:3] == [0, 0, 0] and found2.labels[3] != found2.labels[0]
    assert found2.size.tolist() == [3, 3, 3, 1]


def test_keeper_is_best_ranked_and_signals_recorded() -> None:
    emb = _unit([0, 0.1, 0.2, 90])
    exact_groups = np.array([0, 0, 1, 2])
    edges = merge_candidates(
        4,
        embeddings=emb,
        image_pairs=np.array([[0, 2], [1, 2]]),
        image_sims=np.array([0.999, 0.999], np.float32),
        caption_pairs=np.zeros((0, 2), int),
        caption_jaccard=np.zeros(0),
        exact_groups=exact_groups,
    )
    rank = np.array([2, 0, 1, 3])  # sample 1 ranks best (e.g. largest resolution)
    scorer = PairScorer(emb, np.zeros((4, 4), np.uint32), np.zeros(4, bool), exact_groups)
    found = cluster(4, edges, rule=ClusterRule(), rank=rank, scorer=scorer)
    assert found.keeper.tolist() == [1, 1, 1, 3]
    assert found.signal[1] == "keeper" and set(found.signal[[0, 2]]) <= {"exact_pixels", "image"}
    assert found.size.tolist() == [3, 3, 3, 1]


def test_caption_alone_never_joins() -> None:
    emb = _unit([0, 60])
    sig = np.zeros((2, 8), np.uint32)  # identical captions
    edges = merge_candidates(
        2,
        embeddings=emb,
        image_pairs=np.zeros((0, 2), int),
        image_sims=np.zeros(0),
        caption_pairs=np.array([[0, 1]]),
        caption_jaccard=np.array([1.0]),
        exact_groups=np.arange(2),
    )
    found = cluster(
        2, edges, rule=ClusterRule(), rank=np.arange(2), scorer=PairScorer(emb, sig, np.ones(2, bool), np.arange(2))
    )
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
