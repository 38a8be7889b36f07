"""The audit's parameters (the ``extract`` config group)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memguard.common.config import SWITCH_VALUES, in_range, one_of, switch_value


@dataclass(frozen=True)
class AuditConfig:
    """Unconditional: ``generations`` samples, extracted if normalized ℓ2 < ``delta`` (also reported at
    every value of ``deltas``). Conditional: the captions of the ``top_k`` most duplicated images (null:
    every duplicated image) plus ``control_prompts`` singleton captions (null: as many as duplicated
    prompts), ``per_prompt`` generations each. Generate-and-filter: edges where tiled ℓ2 (a
    ``tile_grid``² grid) < ``tau``; a clique ≥ ``min_clique`` flags a prompt; ℓ2 ≤ ``verify_l2`` to the
    training image confirms it. Nearest-image criterion: a prompt's closest generation is within
    ℓ2 ≤ ``nearest_l2`` of its caption's training image (also reported at every ``nearest_l2s``).
    Unconditional: an extracted image is also reported as featureless when its own mean colour, as a plain
    image, scores below ``featureless_factor`` × δ (memguard/extract/featureless.py; 0: not computed)."""

    generations: int = 1000
    sample_steps: int = 25
    guidance: float = 3.0
    seed: int = 1
    alpha: float = 0.5
    n_nearest: int = 50
    delta: float = 0.3
    deltas: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
    featureless_factor: float = 2.0
    top_k: int | None = None
    control_prompts: int | None = None
    per_prompt: int = 16
    tau: float = 0.15
    min_clique: int = 5
    verify_l2: float = 0.15
    tile_grid: int = 4
    nearest_l2: float = 0.1
    nearest_l2s: tuple[float, ...] = (0.05, 0.075, 0.1, 0.125, 0.15)
    mia_timesteps: tuple[int, ...] = (10, 50, 100, 200, 400)
    mia_samples: int = 500
    wen_generations: int = 4
    wen_first_steps: int = 1
    copy_thresholds: tuple[float, ...] = (0.5, 0.4)
    batch_size: int = 250
    device: str | None = None
    # The audit's generations on a GPU: bfloat16 autocast and torch.compile of the unet; auto: on with CUDA
    # (on the CPU they would change the CPU profile's recorded images, or gain nothing).
    bf16: bool | str = "auto"
    compile: bool | str = "auto"

    def __post_init__(self) -> None:
        for name in ("generations", "sample_steps", "n_nearest", "per_prompt", "min_clique", "tile_grid", "batch_size"):
            in_range(f"extract.{name}", getattr(self, name), lo=1)
        for name in ("mia_samples", "wen_generations", "wen_first_steps"):
            in_range(f"extract.{name}", getattr(self, name), lo=0)
        for name in ("top_k", "control_prompts"):
            if getattr(self, name) is not None:
                in_range(f"extract.{name}", getattr(self, name), lo=0)
        in_range("extract.nearest_l2", self.nearest_l2, lo=0.0)
        in_range("extract.delta", self.delta, lo=0.0)
        in_range("extract.featureless_factor", self.featureless_factor, lo=0.0)
        in_range("extract.alpha", self.alpha, lo=0.0, hi=1.0)
        in_range("extract.tau", self.tau, lo=0.0)
        in_range("extract.verify_l2", self.verify_l2, lo=0.0)
        in_range("extract.guidance", self.guidance, lo=0.0)
        for name in ("bf16", "compile"):
            one_of(f"extract.{name}", getattr(self, name), SWITCH_VALUES)

    def enabled(self, name: str) -> bool:
        """Whether switch ``bf16`` or ``compile`` is on for this audit's device."""
        value = switch_value(getattr(self, name))
        return device_of(self) == "cuda" if value is None else value


def device_of(cfg: AuditConfig) -> str:
    return cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
