"""Training-step bookkeeping that never waits for the GPU: per-micro-batch random draws made on the device,
and the non-finite check, loss and skip count kept on the device until the loop reads them.

Why: a CUDA step is queued, not run, when Python reaches the next line; any ``float(tensor)`` or
``bool(tensor)`` makes the host wait for the queue to drain, and a small model then leaves the GPU idle
while Python prepares the next step (bench/RESULTS.md measured 35–66% utilisation with one such wait per
step). Host-side draws cost the same: they are made on the CPU and copied over every step.

Draws: each micro-batch's noise, timesteps and caption-dropout mask come from a device generator seeded
from (run seed, batch number), so an exact resume needs no generator state and the draws do not depend
on how many processes share the batch. The host generator's stream (the CPU default) is left as it was:
the CPU profile's recorded results come from it.

Deferred checks: ``DeferredChecks.update`` steps the fused AdamW with ``found_inf`` set when the loss or the
gradient norm is not finite — the kernel then leaves weights, moments and step count untouched, as
``torch.amp.GradScaler`` uses it — and masks the EMA update the same way, with diffusers' EMA warm-up decay
computed on the device from a device step count. ``read`` brings the counters back in one transfer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.training_utils import EMAModel


def micro_batch_seed(seed: int, batch_number: int) -> int:
    """A 63-bit seed for global micro-batch ``batch_number`` of a run seeded ``seed`` (SeedSequence mixes the
    two, so neighbouring batches and seeds get unrelated streams)."""
    low, high = np.random.SeedSequence([seed, batch_number]).generate_state(2, np.uint32)
    return (int(high) << 31) ^ int(low)


@dataclass(frozen=True)
class MicroBatchDraws:
    """The random inputs of one micro-batch (the whole micro-batch; each process keeps its slice)."""

    noise: torch.Tensor
    timesteps: torch.Tensor
    drop: torch.Tensor  # caption replaced by the null condition
    caption_rng: np.random.Generator  # caption mitigations (host-side: they edit strings)
    generator: torch.Generator  # later draws of this micro-batch (embedding noise)


def host_draws(
    generator: torch.Generator, *, micro: int, latent_shape: Sequence[int], timesteps: int, caption_dropout: float
) -> MicroBatchDraws:
    """Draws from the run's one host generator, in the order the CPU profile's results were made with."""
    noise = torch.randn((micro, *latent_shape), generator=generator)
    t = torch.randint(0, timesteps, (micro,), generator=generator)
    drop = torch.rand(micro, generator=generator) < caption_dropout
    caption_rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator)))
    return MicroBatchDraws(noise, t, drop, caption_rng, generator)


def device_draws(
    generator: torch.Generator,
    seed: int,
    batch_number: int,
    *,
    micro: int,
    latent_shape: Sequence[int],
    timesteps: int,
    caption_dropout: float,
) -> MicroBatchDraws:
    """Draws on ``generator``'s device, the generator reseeded for this micro-batch (no host work, no copy)."""
    generator.manual_seed(micro_batch_seed(seed, batch_number))
    device = generator.device
    noise = torch.randn((micro, *latent_shape), generator=generator, device=device)
    t = torch.randint(0, timesteps, (micro,), generator=generator, device=device)
    drop = torch.rand(micro, generator=generator, device=device) < caption_dropout
    caption_rng = np.random.default_rng([seed, batch_number, 1])
    return MicroBatchDraws(noise, t, drop, caption_rng, generator)


def ema_decay_on_device(ema: EMAModel, steps: torch.Tensor) -> torch.Tensor:
    """diffusers' ``EMAModel.get_decay`` for a device step count (float64, one element)."""
    step = (steps - ema.update_after_step - 1).clamp(min=0).double()
    decay = 1 - (1 + step / ema.inv_gamma) ** -ema.power if ema.use_ema_warmup else (1 + step) / (10 + step)
    decay = decay.clamp(min=ema.min_decay, max=ema.decay)
    return torch.where(step > 0, decay, torch.zeros_like(decay))


def masked_ema_step(ema: EMAModel, params: Sequence[torch.Tensor], *, finite: torch.Tensor, steps: torch.Tensor) -> None:
    """``ema.step(params)`` when ``finite`` (a device bool), else nothing, without reading ``finite``.
    ``steps`` is the EMA's step count including this step when finite."""
    weight = ((1 - ema_decay_on_device(ema, steps)) * finite).to(torch.float32)
    with torch.no_grad():
        diffs = torch._foreach_sub([p.detach() for p in params], ema.shadow_params)
        # The 0-d tensor overload of _foreach_mul_ keeps the weight on the device; _foreach_lerp_ would
        # turn it into a host scalar (a wait).
        torch._foreach_mul_(diffs, weight)
        torch._foreach_add_(ema.shadow_params, diffs)


@dataclass(frozen=True)
class CheckReading:
    skipped: int  # non-finite steps since the run (or its resume) started
    last_loss: float  # of the last finite step
    grad_norm: float  # of the last step


class DeferredChecks:
    """The non-finite check of each step, with the skip applied on the device (module docstring)."""

    def __init__(self, ema: EMAModel, params: Sequence[torch.Tensor], device: torch.device) -> None:
        self.ema = ema
        self.params = list(params)
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)
        self.last_loss = torch.full((), math.nan, dtype=torch.float32, device=device)
        self.grad_norm = torch.zeros((), dtype=torch.float32, device=device)
        self.ema_steps = torch.full((), ema.optimization_step, dtype=torch.int64, device=device)

    def update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """One optimizer and EMA step, both skipped on the device if ``loss`` or ``grad_norm`` is not finite;
        the gradients are cleared either way."""
        finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
        # accelerate's AcceleratedOptimizer wraps the torch optimizer whose step() reads found_inf.
        target: Any = getattr(optimizer, "optimizer", optimizer)
        target.found_inf = (~finite).to(torch.float32)
        try:
            optimizer.step()
        finally:
            del target.found_inf
        optimizer.zero_grad(set_to_none=True)
        self.skipped += ~finite
        self.last_loss = torch.where(finite, loss.detach().float(), self.last_loss)
        self.grad_norm = grad_norm.detach().float()
        self.ema_steps += finite
        masked_ema_step(self.ema, self.params, finite=finite, steps=self.ema_steps)

    def read(self) -> CheckReading:
        """The counters, in one transfer; the EMA's host step count brought up to date (its state_dict, and
        so a checkpoint, holds it)."""
        values = torch.stack([self.skipped.double(), self.last_loss.double(), self.grad_norm.double(),
                              self.ema_steps.double()]).tolist()  # fmt: skip
        self.ema.optimization_step = int(values[3])
        return CheckReading(skipped=int(values[0]), last_loss=values[1], grad_norm=values[2])
