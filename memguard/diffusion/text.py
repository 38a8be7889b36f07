"""Caption encoders: the offline MiniLM sentence encoder (cached per caption) for models trained from scratch.

MiniLM's pooled sentence embedding conditions the UNet as a single cross-attention token; the
unconditional ("null") embedding is the zero vector, which classifier-free guidance and Wen's detector use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from memguard.common.minilm import MINILM_DIM, load_minilm


class CaptionEncoder:
    """Frozen MiniLM; ``encode`` returns (B, 1, 384) and remembers every caption it has seen.

    Each caption is encoded on its own: a batch pads its captions to the longest and its matrix products
    round by the batch's shape, so a caption's vector would depend on which captions were new at the time.
    Alone, it is a function of the caption (~10 ms each on a CPU, once per caption)."""

    dim = MINILM_DIM

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        self.model = load_minilm(path, device)
        self._cache: dict[str, torch.Tensor] = {}

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        for caption in sorted({c for c in captions if c not in self._cache}):
            with torch.inference_mode():
                vector = self.model.encode(
                    [caption], convert_to_tensor=True, normalize_embeddings=True, batch_size=1, show_progress_bar=False
                )[0]
            self._cache[caption] = vector.float().cpu().clone()
        return torch.stack([self._cache[c] for c in captions])[:, None, :]

    def null(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 1, self.dim)
