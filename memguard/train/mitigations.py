"""Training-time mitigations of memorization (exact definitions: Somepalli et al. 2023; Wen et al. 2024).

Caption transforms, each firing with probability ``p`` per sample:
- ``mc``  multiple captions: use another caption of the same image (from the shard's ``captions`` list);
- ``rc``  random caption: replace the caption with random vocabulary tokens;
- ``rt``  random tokens: insert ``tokens`` random vocabulary tokens at random positions;
- ``cwr`` caption word repetition: insert ``tokens`` words of the caption itself at random positions.
Embedding noise: ``gni`` adds ``gni_scale``·N(0, I) to the caption embedding (probability ``p``).
Loss filter: ``wen`` drops samples whose ‖ε(x_t, c) − ε(x_t, ∅)‖₂ ≥ ``wen_tau`` from the loss.
Duplicate-aware reweighting is not a transform: it is dedup's ``reweight`` policy, honoured by the sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

CAPTION_KINDS = ("mc", "rc", "rt", "cwr")
ALL_KINDS = (*CAPTION_KINDS, "gni", "wen")


@dataclass(frozen=True)
class MitigationConfig:
    kinds: tuple[str, ...] = ()
    p: float = 0.1
    tokens: int = 2
    random_caption_length: int = 6
    gni_scale: float = 0.1
    wen_tau: float = 2.0

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown mitigation(s) {sorted(unknown)}; known: {ALL_KINDS}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")


def _insert(words: list[str], new: Sequence[str], rng: np.random.Generator) -> list[str]:
    out = list(words)
    for word in new:
        out.insert(int(rng.integers(0, len(out) + 1)), word)
    return out


def transform_caption(
    caption: str,
    alternatives: Sequence[str],
    *,
    config: MitigationConfig,
    rng: np.random.Generator,
    vocab: Sequence[str],
) -> str:
    """Apply the caption mitigations in order; each fires independently with probability p."""
    for kind in config.kinds:
        if kind not in CAPTION_KINDS or rng.random() >= config.p:
            continue
        words = caption.split()
        if kind == "mc" and alternatives:
            caption = str(alternatives[int(rng.integers(0, len(alternatives)))])
        elif kind == "rc":
            caption = " ".join(vocab[int(i)] for i in rng.integers(0, len(vocab), config.random_caption_length))
        elif kind == "rt":
            caption = " ".join(_insert(words, [vocab[int(i)] for i in rng.integers(0, len(vocab), config.tokens)], rng))
        elif kind == "cwr" and words:
            caption = " ".join(_insert(words, [words[int(i)] for i in rng.integers(0, len(words), config.tokens)], rng))
    return caption


def gaussian_noise_injection(cond: torch.Tensor, config: MitigationConfig, generator: torch.Generator) -> torch.Tensor:
    """GNI: cond + λ·N(0, I) for a random subset (probability p) of the batch."""
    if "gni" not in config.kinds:
        return cond
    fire = torch.rand(cond.shape[0], generator=generator, device=generator.device) < config.p
    noise = torch.randn(cond.shape, generator=generator, device=generator.device) * config.gni_scale
    return cond + noise.to(cond) * fire.to(cond).view(-1, *([1] * (cond.dim() - 1)))


def wen_keep_mask(eps_cond: torch.Tensor, eps_null: torch.Tensor, tau: float) -> torch.Tensor:
    """Wen's filter: keep a sample only if its text-guidance magnitude is below τ."""
    magnitude = (eps_cond - eps_null).flatten(1).norm(dim=1)
    return magnitude < tau


def vocabulary(captions: Sequence[str], tokenizer_vocab: Sequence[str] = ()) -> list[str]:
    """Random tokens come from the tokenizer's whole-word entries if given, else the corpus's words."""
    words = [w for w in tokenizer_vocab if w.isalpha() and len(w) > 2]
    if not words:
        words = sorted({w for c in captions for w in c.split()})
    return words or ["token"]
