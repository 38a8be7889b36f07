"""Wen et al.'s memorization detector: the magnitude of text guidance,
mean over the first sampling steps (and a few generations) of ‖ε(x_t, prompt) − ε(x_t, ∅)‖₂."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler

from memguard.diffusion.models import DiffusionModel
from memguard.diffusion.sampling import noise_for


@torch.no_grad()
def wen_scores(
    model: DiffusionModel,
    prompts: Sequence[str],
    *,
    generations: int = 4,
    steps: int = 50,
    first_steps: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """One score per prompt; higher = more likely memorized."""
    if not model.conditional:
        raise ValueError("Wen's detector needs a text-conditional model")
    # Trailing spacing starts at the last training timestep, where x_T ~ N(0, I) really holds; the default
    # (leading) starts earlier, where the image still shows through, and shifts the colours of samples.
    scheduler = DDIMScheduler.from_config(model.scheduler.config, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    scores = np.zeros(len(prompts))
    for p, prompt in enumerate(prompts):
        x = noise_for(range(p * generations, (p + 1) * generations), model.latent_shape, seed).to(device)
        cond = model.encode_captions([prompt] * generations, device)
        null = model.null_condition(generations, device)
        assert cond is not None and null is not None
        total = 0.0
        for t in scheduler.timesteps[:first_steps]:
            tt = torch.full((generations,), int(t), device=device, dtype=torch.long)
            eps_c, eps_u = model.eps(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, null])).chunk(2)
            total += float((eps_c - eps_u).flatten(1).norm(dim=1).mean())
            x = scheduler.step(eps_c, t, x).prev_sample
        scores[p] = total / first_steps
    return scores
