"""The ``pairs`` stage: the global candidate searches over the joined map outputs, each a cached entry
keyed by the map's key and its own parameters, so a threshold sweep reruns none of them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from memguard.common.cache import entry_key
from memguard.dedup.params import DedupParams
from memguard.dedup.signals.caption_embed import embed_captions
from memguard.dedup.signals.embed import view_layout
from memguard.dedup.signals.local import Verifier
from memguard.dedup.signals.local_candidates import vote_pairs
from memguard.dedup.signals.lsh import caption_pairs
from memguard.dedup.signals.lsh_tasks import LshTasks
from memguard.dedup.signals.minhash import MIN_CAPTION_CHARS, long_enough
from memguard.dedup.signals.neighbor_tasks import NeighborTasks
from memguard.dedup.signals.neighbors import Widen, finite_neighbor_pairs
from memguard.dedup.signals.pairs import pair_codes, pair_cosines
from memguard.dedup.stages.contract import StageRun
from memguard.dedup.stages.map import Mapped


@dataclass(frozen=True)
class Candidates:
    """Every signal's candidate pairs, indices into the valid samples. ``signatures`` and ``usable`` are
    the caption signal the decide and apply stages score with (empty when captions are not compared);
    ``caption_embeddings`` and ``semantic_pairs`` are None without the caption-embedding signal."""

    caption_pairs: np.ndarray
    caption_jaccard: np.ndarray
    image_pairs: np.ndarray
    image_sims: np.ndarray
    signatures: np.ndarray
    usable: np.ndarray
    caption_embeddings: np.ndarray | None
    semantic_pairs: np.ndarray | None


def find_candidates(mapped: Mapped, params: DedupParams, run: StageRun) -> Candidates:
    """Caption pairs (MinHash LSH), image neighbours (faiss, per view) and, if enabled, caption-embedding
    neighbours of ``mapped``'s valid samples."""
    n = len(mapped.valid_rows)
    if params.caption_enabled:
        signatures, usable = mapped.signatures, mapped.usable
        cap_pairs, cap_jaccard = run.cached_arrays_with_scratch(
            "caption_pairs",
            entry_key("caption_pairs", mapped.key, params.lsh),
            names=("pairs", "jaccard"),
            compute=lambda scratch: caption_pairs(signatures, usable, params.lsh, tasks=LshTasks(run.run_tasks, scratch)),
        )
    else:  # image-only: no caption signal at all (a caption a corpus happens to carry is not compared)
        signatures = np.zeros((n, params.minhash.num_perm), np.uint32)
        usable = np.zeros(n, bool)
        cap_pairs, cap_jaccard = np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    img_pairs, img_sims = _image_pairs(mapped, params, run)
    caption_emb, semantic_pairs = _caption_semantics(mapped, params, run)
    return Candidates(cap_pairs, cap_jaccard, img_pairs, img_sims, signatures, usable, caption_emb, semantic_pairs)


def _image_pairs(mapped: Mapped, params: DedupParams, run: StageRun) -> tuple[np.ndarray, np.ndarray]:
    """Image neighbour pairs with their similarity: the global descriptor's cosine, or where the pair's
    local features verify it, the larger of that and the verified similarity. With verification on, the
    search keeps neighbours of two samples with keypoints down to the candidate floor: a pasted or
    cropped copy's global similarity to its original can be far below the global thresholds while its
    local features still match."""
    views = view_layout(params.embedder.kind)
    local = params.local
    widen = Widen(mapped.feature_rows >= 0, local.candidate_floor) if local.enabled else None
    search_key = entry_key("image_neighbors", mapped.key, params.index, local.candidate_floor if widen else None)
    pairs, sims = run.cached_arrays_with_scratch(
        "image_neighbors", search_key, names=("pairs", "sims"),
        compute=lambda scratch: finite_neighbor_pairs(mapped.embeddings, params.index, views, widen=widen,
                                                      tasks=NeighborTasks(run.run_tasks, scratch)),
    )  # fmt: skip
    if not local.enabled:
        return pairs, sims
    if local.votes.enabled:
        pairs, sims = _with_voted_pairs(mapped, params, run, found=(pairs, sims))
    (combined,) = run.cached_arrays(
        "verified_pairs", entry_key("verified_pairs", mapped.key, search_key, local), names=("sims",),
        compute=lambda: (Verifier(mapped.features, local, rows=mapped.feature_rows).combined(sims, pairs[:, 0], pairs[:, 1]),),
    )  # fmt: skip
    return pairs, combined


def _with_voted_pairs(
    mapped: Mapped, params: DedupParams, run: StageRun, *, found: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The neighbour pairs and the descriptor-voting pairs they lack (cached), the latter scored with
    the global descriptor."""
    pairs, sims = found
    (voted,) = run.cached_arrays(
        "voted_pairs", entry_key("voted_pairs", mapped.key, params.local.features, params.local.votes), names=("pairs",),
        compute=lambda: (vote_pairs(mapped.features, mapped.feature_rows, params.local),),
    )  # fmt: skip
    n = len(mapped.valid_rows)
    new = voted[~np.isin(pair_codes(voted[:, 0], voted[:, 1], n), pair_codes(pairs[:, 0], pairs[:, 1], n))]
    if not len(new):
        return pairs, sims
    new_sims = pair_cosines(mapped.embeddings, new[:, 0], new[:, 1], layout=view_layout(params.embedder.kind))
    return np.concatenate([pairs, new]), np.concatenate([sims, new_sims]).astype(np.float32)


def _caption_semantics(
    mapped: Mapped, params: DedupParams, run: StageRun
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The optional third signal: MiniLM caption embeddings and their neighbour pairs (both cached)."""
    semantic = params.caption_semantic
    if not semantic.enabled:
        return None, None
    captions: list[str] = mapped.valid_column("caption_norm").to_pylist()
    usable = long_enough(captions)
    k_emb = entry_key("caption_embeddings", mapped.key, semantic.weights, MIN_CAPTION_CHARS)
    (vectors,) = run.cached_arrays(
        "caption_embeddings", k_emb, names=("embeddings",), compute=lambda: (embed_captions(captions, usable, semantic),)
    )
    index = replace(params.index, min_sim=semantic.floor)
    pairs, _ = run.cached_arrays(
        "caption_neighbors",
        entry_key("caption_neighbors", k_emb, index),
        names=("pairs", "sims"),
        compute=lambda: finite_neighbor_pairs(vectors, index),
    )
    return vectors, pairs
