"""The ``pairs`` stage: the global candidate searches over the joined map outputs, each a cached entry
keyed by the map's key and its own parameters, so a threshold sweep reruns none of them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from memguard.common.cache import entry_key
from memguard.dedup.params import DedupParams
from memguard.dedup.signals.caption_embed import embed_captions
from memguard.dedup.signals.embed import view_layout
from memguard.dedup.signals.lsh import caption_pairs
from memguard.dedup.signals.minhash import MIN_CAPTION_CHARS, long_enough
from memguard.dedup.signals.neighbors import finite_neighbor_pairs
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
        cap_pairs, cap_jaccard = run.cached_arrays(
            "caption_pairs",
            entry_key("caption_pairs", mapped.key, params.lsh),
            names=("pairs", "jaccard"),
            compute=lambda: caption_pairs(signatures, usable, params.lsh),
        )
    else:  # image-only: no caption signal at all (a caption a corpus happens to carry is not compared)
        signatures = np.zeros((n, params.minhash.num_perm), np.uint32)
        usable = np.zeros(n, bool)
        cap_pairs, cap_jaccard = np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    views = view_layout(params.embedder.kind)
    img_pairs, img_sims = run.cached_arrays(
        "image_neighbors",
        entry_key("image_neighbors", mapped.key, params.index),
        names=("pairs", "sims"),
        compute=lambda: finite_neighbor_pairs(mapped.embeddings, params.index, views),
    )
    caption_emb, semantic_pairs = _caption_semantics(mapped, params, run)
    return Candidates(cap_pairs, cap_jaccard, img_pairs, img_sims, signatures, usable, caption_emb, semantic_pairs)


def _caption_semantics(
    mapped: Mapped, params: DedupParams, run: StageRun
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The optional third signal: MiniLM caption embeddings and their neighbour pairs (both cached)."""
    semantic = params.caption_semantic
    if not semantic.enabled:
        return None, None
    captions: list[str] = mapped.valid_units.column("caption_norm").to_pylist()
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
