"""The denoising loss of one micro-batch, with the training-time mitigations' hooks (caption transforms,
embedding noise, Wen's filter) and its random draws made on the host or the device (``train.device_steps``)."""

from __future__ import annotations

import torch

from memguard.train.data import Batch
from memguard.train.device_steps import MicroBatchDraws, device_draws, host_draws
from memguard.train.mitigations import gaussian_noise_injection, transform_caption, wen_keep_mask
from memguard.train.run_state import TrainingRun


def micro_batch_loss(run: TrainingRun, batch: Batch, batch_number: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(loss, samples, samples Wen's filter dropped) of this process's share of one micro-batch. Every
    process draws the whole micro-batch's randomness, then keeps its slice: the draws (and so the result)
    do not depend on the number of processes."""
    model, accelerator, micro = run.model, run.accelerator, run.micro
    device = accelerator.device
    shape, timesteps = model.latent_shape, model.scheduler.config.num_train_timesteps
    if run.device_generator is not None:
        draws = device_draws(run.device_generator, run.cfg.seed, batch_number, micro=micro, latent_shape=shape,
                             timesteps=timesteps, caption_dropout=run.cfg.caption_dropout)  # fmt: skip
    else:
        draws = host_draws(run.generator, micro=micro, latent_shape=shape, timesteps=timesteps,
                           caption_dropout=run.cfg.caption_dropout)  # fmt: skip
    mine = slice(accelerator.process_index, None, accelerator.num_processes)
    noise, t, drop = draws.noise[mine].to(device), draws.timesteps[mine].to(device), draws.drop[mine].to(device)
    pixels = torch.from_numpy(batch.pixels)
    if run.pin_memory:  # page-locked, so the copy is queued and the host goes on
        pixels = pixels.pin_memory()
    x0 = model.to_latents(pixels.to(device, non_blocking=run.pin_memory))
    x_t = model.scheduler.add_noise(x0, noise, t)
    n = len(batch.captions)
    cond, keep = None, torch.ones(n, dtype=torch.bool, device=device)
    if model.conditional:
        cond, keep = caption_condition(run, batch, noisy=(x_t, t), drop=drop, draws=draws)
    with accelerator.autocast():
        eps = model.eps(x_t, t, cond, unet=run.forward)
        per_sample = ((eps.float() - model.target(x0, noise, t).float()) ** 2).flatten(1).mean(1)
        loss = (per_sample * keep).sum() / max(1, n) / run.cfg.grad_accum
    return loss, n, (~keep).sum()


def caption_condition(
    run: TrainingRun,
    batch: Batch,
    *,
    noisy: tuple[torch.Tensor, torch.Tensor],
    drop: torch.Tensor,
    draws: MicroBatchDraws,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The caption condition with the training-time mitigations applied (caption transforms, Gaussian
    noise on the embedding, Wen's filter), and which samples stay in the loss."""
    model, mitigation, device = run.model, run.mitigation, run.accelerator.device
    captions = [
        transform_caption(caption, alts, config=mitigation, rng=draws.caption_rng, vocab=run.vocab)
        for caption, alts in zip(batch.captions, batch.alt_captions, strict=True)
    ]
    n = len(captions)
    encoded = model.encode_captions(captions, device)
    null = model.null_condition(n, device)
    assert encoded is not None and null is not None
    cond = gaussian_noise_injection(encoded, mitigation, draws.generator)
    keep = torch.ones(n, dtype=torch.bool, device=device)
    if "wen" in mitigation.kinds:
        x_t, t = noisy
        with torch.no_grad():
            both = model.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null]), unet=run.forward)
        eps_cond, eps_null = both.chunk(2)
        keep = wen_keep_mask(eps_cond, eps_null, mitigation.wen_tau)
    return torch.where(drop.view(-1, 1, 1), null, cond), keep
