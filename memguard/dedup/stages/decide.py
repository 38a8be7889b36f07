"""The ``decide`` stage: the cluster rule over the candidates (or SemDeDup over the embeddings) gives
one ``Decision`` per valid sample. Not cached: it is what a threshold sweep reruns."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from memguard.common.mapped import release
from memguard.dedup.decide.cluster import PairScorer, cluster, merge_candidates
from memguard.dedup.decide.decision import Decision
from memguard.dedup.decide.groups import sorted_group_ids
from memguard.dedup.decide.semdedup import SemDedupParams, semdedup
from memguard.dedup.params import DedupParams
from memguard.dedup.signals.embed import view_layout
from memguard.dedup.signals.local import Verifier
from memguard.dedup.signals.neighbors import finite_rows
from memguard.dedup.signals.pairs import PairTable
from memguard.dedup.signals.views import view
from memguard.dedup.stages.map import Mapped
from memguard.dedup.stages.pairs import Candidates


def finite_embeddings(embeddings: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """The embeddings with non-finite rows zeroed (no copy in the usual case: all finite)."""
    return embeddings if finite.all() else np.where(finite[:, None], embeddings, 0.0).astype(np.float32)


def keeper_rank(mapped: Mapped) -> np.ndarray:
    """Each valid sample's place in keeper priority among equals: largest resolution, then smallest key."""
    valid = mapped.valid_units
    n = valid.num_rows
    keys = valid.column("key").to_numpy(zero_copy_only=False).astype(str)
    area = valid.column("width").to_numpy().astype(np.int64) * valid.column("height").to_numpy().astype(np.int64)
    order = np.lexsort((keys, -area)) if n else np.zeros(0, np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def decide(mapped: Mapped, candidates: Candidates, params: DedupParams) -> Decision:
    """Cluster the valid samples of ``mapped`` (non-finite embeddings never pair) and choose keepers."""
    embeddings = mapped.embeddings
    n = len(mapped.valid_rows)
    views = view_layout(params.embedder.kind)
    local = params.local
    known = PairTable.of(candidates.image_pairs, candidates.image_sims, n) if local.enabled else None
    verifier = Verifier(mapped.features, local, rows=mapped.feature_rows) if local.enabled else None
    finite = finite_rows(embeddings) if n else np.zeros(0, bool)
    safe_emb = finite_embeddings(embeddings, finite)
    if params.policy == "semdedup":
        decision = _semdedup_decision(np.ascontiguousarray(view(safe_emb, views, 0)), finite, params.semdedup)
    else:
        exact_groups = sorted_group_ids(mapped.valid_units.column("pixel_hash"))
        exact_groups = np.where(finite, exact_groups, -1 - np.arange(n))  # non-finite rows never pair
        cap_pairs, semantic_pairs = candidates.caption_pairs, candidates.semantic_pairs
        cap_ok = finite[cap_pairs[:, 0]] & finite[cap_pairs[:, 1]] if len(cap_pairs) else np.zeros(0, bool)
        if semantic_pairs is not None:
            semantic_pairs = semantic_pairs[finite[semantic_pairs[:, 0]] & finite[semantic_pairs[:, 1]]]
        edges = merge_candidates(
            n,
            embeddings=safe_emb,
            image_pairs=candidates.image_pairs,
            image_sims=candidates.image_sims,
            caption_pairs=cap_pairs[cap_ok],
            caption_jaccard=candidates.caption_jaccard[cap_ok],
            exact_groups=exact_groups,
            caption_embeddings=candidates.caption_embeddings,
            semantic_pairs=semantic_pairs,
            views=views,
        )
        scorer = PairScorer(
            embeddings=safe_emb,
            signatures=candidates.signatures,
            usable=candidates.usable,
            exact_groups=exact_groups,
            caption_embeddings=candidates.caption_embeddings,
            views=views,
            known=known,
            verifier=verifier,
        )
        found = cluster(n, edges, rule=params.rule, rank=keeper_rank(mapped), scorer=scorer)
        decision = replace(found, finite=finite)
    release(embeddings, candidates.signatures)  # pages the scorer touched (memory-mapped: common/mapped.py)
    return decision


def _semdedup_decision(embeddings: np.ndarray, finite: np.ndarray, params: SemDedupParams) -> Decision:
    rows = np.flatnonzero(finite)
    dup_local, _ = semdedup(embeddings[rows], params)
    keeper = np.arange(len(embeddings))
    keeper[rows] = np.where(dup_local >= 0, rows[np.maximum(dup_local, 0)], rows)
    _, labels = np.unique(keeper, return_inverse=True)
    size = np.bincount(labels)[labels]
    signal = np.where(keeper != np.arange(len(keeper)), "semdedup", "")
    signal = np.where(size > 1, "semdedup", signal).astype(object)
    return Decision(labels=labels, keeper=keeper, size=size, signal=signal, finite=finite)
