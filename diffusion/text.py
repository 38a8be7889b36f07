"""Caption encoders: the offline MiniLM sentence encoder (cached per caption) for models trained from scratch.

MiniLM's pooled sentence embedding conditions the UNet as a single cross-attention token; the
unconditional ("null") embedding is the zero vector, which classifier-free guidance and Wen's detector use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from common.minilm import MINILM_DIM, load_minilm


class CaptionEncoder:
    """Frozen MiniLM; ``encode`` returns (B, 1, 384) and remembers every caption it has seen."""

    dim = MINILM_DIM

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        self.model = load_minilm(path, device)
        self._cache: dict[str, torch.Tensor] = {}

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self._cache})
        if missing:
            with torch.inference_mode():
                vectors = self.model.encode(
                    missing, convert_to_tensor=True, normalize_embeddings=True, batch_size=256, show_progress_bar=False
                )
            for caption, vector in zip(missing, vectors.float().cpu(), strict=True):
                self._cache[caption] = vector.clone()
        return torch.stack([self._cache[c] for c in captions])[:, None, :]

    def null(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 1, self.dim)
