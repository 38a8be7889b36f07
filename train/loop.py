"""The training loop: one readable function (edm / nanoGPT style) under accelerate.

Exact resume: the sample order is a pure function of (seed, batch number) and every random draw comes
from one seeded generator whose state is checkpointed, so a run killed at any step — even inside a
checkpoint save — and resumed ends with bit-identical weights on the CPU.

One function and its helpers, a little over 300 lines: the resume state (generator, sampler position,
EMA, optimizer) is read and written in one place on purpose.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from diffusers.training_utils import EMAModel
from PIL import Image
from tqdm import tqdm

from common.atomic import atomic_path, write_json
from common.progress import progress_label
from diffusion.images import ImageSet
from diffusion.models import DiffusionModel, trainable_parameters
from diffusion.sampling import ema_weights, generate, grid
from diffusion.saved import save_model
from train.checkpoint import (
    begin_checkpoint,
    finish_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    partial_folder,
    save_checkpoint,
)
from train.config import TrainConfig
from train.data import MemmapData, TrainingData
from train.mitigations import MitigationConfig, gaussian_noise_injection, transform_caption, vocabulary, wen_keep_mask

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many steps with a non-finite loss."""


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    seconds: float
    images_per_second: float
    skipped_steps: int
    final_loss: float
    resumed_from: int


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine decay to zero at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


ACCELERATE_STATE = "accelerate"  # the folder accelerate's save_state writes inside a checkpoint


def _flat_state(
    unet: torch.nn.Module | None, ema: EMAModel, optimizer: torch.optim.Optimizer | None, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Our part of a checkpoint: the EMA and the generator always; the model and optimizer unless
    accelerate's ``save_state`` holds them (``None``)."""
    tensors = {f"model.{k}": v for k, v in unet.state_dict().items()} if unet is not None else {}
    tensors.update({f"ema.{i}": p for i, p in enumerate(ema.shadow_params)})
    state: dict[str, Any] = {"ema": {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}}
    if optimizer is not None:
        opt_tensors, state["optimizer"] = optimizer_to_flat(optimizer)
        tensors.update(opt_tensors)
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    return tensors, state


def _restore(
    folder: Path, unet: torch.nn.Module, ema: EMAModel, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> dict[str, Any]:
    """Everything of our format; in accelerate's, the model and optimizer are loaded after ``prepare``."""
    tensors, state = load_checkpoint(folder)
    if "optimizer" in state:
        unet.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer_from_flat(optimizer, tensors, state["optimizer"])
    shadow = [tensors[f"ema.{i}"] for i in range(len(ema.shadow_params))]
    ema.load_state_dict({**state["ema"], "shadow_params": shadow})
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return state


def train_model(
    model: DiffusionModel,
    data: ImageSet | TrainingData,
    cfg: TrainConfig,
    *,
    out_dir: str | Path,
    mitigation: MitigationConfig | None = None,
) -> TrainResult:
    out_dir = Path(out_dir)
    mitigation = mitigation or MitigationConfig()
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.log_with == "none" else cfg.log_with,
        project_dir=str(out_dir),
        cpu=not torch.cuda.is_available(),  # the same choice as the experiment's PartialState
    )
    device = accelerator.device
    torch.manual_seed(cfg.seed)
    unet = model.unet.to(device)
    if cfg.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if model.vae is not None:
        model.vae.to(device)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.lr,
        betas=cfg.adam_betas,
        weight_decay=cfg.weight_decay,
        fused=cfg.fused_adam and device.type == "cuda",
        # Multi-tensor updates (one op over all parameters, not one per tensor) also on the CPU, where
        # torch does not pick them by default; the fused kernel replaces them on the GPU.
        foreach=not (cfg.fused_adam and device.type == "cuda"),
    )
    ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True, power=0.75, foreach=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    source = MemmapData(data, cfg.seed, random_flip=cfg.random_flip) if isinstance(data, ImageSet) else data
    vocab = vocabulary(source.vocabulary_captions()) if {"rc", "rt"} & set(mitigation.kinds) else []
    ckpt_root = out_dir / "checkpoints"

    start_step = 0
    latest = latest_checkpoint(ckpt_root)
    if latest is not None:
        start_step = int(_restore(latest, model.unet, ema, optimizer, generator)["step"])
        log.info("resuming from %s (step %d)", latest, start_step)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    if latest is not None and (latest / ACCELERATE_STATE).is_dir():
        accelerator.load_state(str(latest / ACCELERATE_STATE))
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    use_accelerate_state = cfg.checkpoint_format == "accelerate" or sharded
    forward = torch.compile(unet) if cfg.compile else unet
    accelerator.init_trackers("train", config={k: str(v) for k, v in asdict(cfg).items()})
    micro = cfg.batch_size // cfg.grad_accum
    if micro * cfg.grad_accum != cfg.batch_size or micro % accelerator.num_processes:
        raise ValueError(
            f"batch_size {cfg.batch_size} must split into {cfg.grad_accum} micro-batches "
            f"divisible by {accelerator.num_processes} processes"
        )

    batches = source.batches(
        start_step * cfg.grad_accum, micro, rank=accelerator.process_index, world=accelerator.num_processes
    )
    skipped, last_loss, images, timer = 0, math.nan, 0, time.perf_counter()
    wen_dropped = 0  # samples Wen's filter left out of the loss (this process's share)
    bar = tqdm(
        range(start_step, cfg.steps),
        initial=start_step,
        total=cfg.steps,
        desc=progress_label("train"),
        unit="step",
        disable=not accelerator.is_main_process,
        mininterval=1.0,
    )
    warm_time, warm_images = timer, 0  # throughput is reported from the 10th step on (after warm-up)
    for step in bar:
        if step == start_step + 10:
            warm_time, warm_images = time.perf_counter(), images
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=device)
        for m in range(cfg.grad_accum):
            batch = next(batches)  # batch number step * grad_accum + m: this process's share
            # Every process draws the whole micro-batch's randomness, then keeps its slice: the draws
            # (and so the result) do not depend on the number of processes.
            noise = torch.randn((micro, *model.latent_shape), generator=generator)
            t = torch.randint(0, model.scheduler.config.num_train_timesteps, (micro,), generator=generator)
            drop = torch.rand(micro, generator=generator) < cfg.caption_dropout
            caption_rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator)))
            mine = slice(accelerator.process_index, None, accelerator.num_processes)
            noise, t, drop = noise[mine].to(device), t[mine].to(device), drop[mine].to(device)
            x0 = model.to_latents(torch.from_numpy(batch.pixels).to(device))
            x_t = model.scheduler.add_noise(x0, noise, t)
            cond = None
            n = len(batch.captions)
            keep = torch.ones(n, dtype=torch.bool, device=device)
            if model.conditional:
                captions = [
                    transform_caption(caption, alts, config=mitigation, rng=caption_rng, vocab=vocab)
                    for caption, alts in zip(batch.captions, batch.alt_captions, strict=True)
                ]
                encoded = model.encode_captions(captions, device)
                null = model.null_condition(n, device)
                assert encoded is not None and null is not None
                cond = gaussian_noise_injection(encoded, mitigation, generator)
                if "wen" in mitigation.kinds:
                    with torch.no_grad():
                        both = model.eps(
                            torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null]), unet=forward
                        )
                    eps_cond, eps_null = both.chunk(2)
                    keep = wen_keep_mask(eps_cond, eps_null, mitigation.wen_tau)
                    wen_dropped += int((~keep).sum())
                cond = torch.where(drop.view(-1, 1, 1), null, cond)
            with accelerator.autocast():
                eps = model.eps(x_t, t, cond, unet=forward)
                per_sample = ((eps.float() - model.target(x0, noise, t).float()) ** 2).flatten(1).mean(1)
                loss = (per_sample * keep).sum() / max(1, n) / cfg.grad_accum
            with accelerator.no_sync(unet) if m < cfg.grad_accum - 1 else nullcontext():
                accelerator.backward(loss)
            step_loss += loss.detach()
            images += n * accelerator.num_processes
        # The clipped-gradient norm is computed anyway; a NaN/Inf anywhere in the gradients shows up in it.
        grad_norm = accelerator.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if not (bool(torch.isfinite(step_loss)) and bool(torch.isfinite(grad_norm))):
            optimizer.zero_grad(set_to_none=True)
            skipped += 1
            log.warning("non-finite loss at step %d (%d skipped so far)", step, skipped)
            if skipped > cfg.max_bad_steps:
                raise TrainingDiverged(f"{skipped} steps with a non-finite loss (limit {cfg.max_bad_steps})")
            continue
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(params)
        last_loss = float(step_loss)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            rate = images / max(1e-9, time.perf_counter() - timer)
            accelerator.log(
                {"loss": last_loss, "lr": lr, "grad_norm": float(grad_norm), "images_per_s": rate}, step=done
            )
            bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}")
        if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps) and accelerator.is_main_process:
            _sample_grid(
                model, accelerator.unwrap_model(unet), ema, source, cfg, out_dir / "samples" / f"{done:08d}.png"
            )
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            if use_accelerate_state:  # every process writes its shard of the state, then one commits
                if accelerator.is_main_process:
                    begin_checkpoint(ckpt_root, done)
                accelerator.wait_for_everyone()
                partial = partial_folder(ckpt_root, done)
                accelerator.save_state(str(partial / ACCELERATE_STATE), safe_serialization=True)
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    tensors, state = _flat_state(None, ema, None, generator)
                    finish_checkpoint(ckpt_root, done, tensors=tensors, state=state, keep=cfg.keep_checkpoints)
            elif accelerator.is_main_process:
                tensors, state = _flat_state(accelerator.unwrap_model(unet), ema, optimizer, generator)
                save_checkpoint(ckpt_root, done, tensors=tensors, state=state, keep=cfg.keep_checkpoints)
            accelerator.wait_for_everyone()
    seconds = time.perf_counter() - timer
    throughput = (images - warm_images) / max(time.perf_counter() - warm_time, 1e-9)
    # Not accelerator.end_training(): it also destroys the process group, and an experiment trains several
    # arms (and waits on barriers) in one process group.
    for tracker in accelerator.trackers:
        tracker.finish()
    model_dir = out_dir / "model"
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(unet)
        with ema_weights(final, ema):
            save_model(model, model_dir, final)
        ema.copy_to([p for p in final.parameters() if p.requires_grad])  # the model keeps the EMA weights
        write_json(
            out_dir / "train_result.json",
            {
                "steps": cfg.steps,
                "resumed_from": start_step,
                "seconds": round(seconds, 2),
                "images_per_second": round(throughput, 1),
                "skipped_steps": skipped,
                "final_loss": last_loss,
                # The main process's share of its own samples (under several processes, each sees a slice).
                "wen_dropped_share": round(wen_dropped * accelerator.num_processes / max(1, images), 6)
                if "wen" in mitigation.kinds
                else None,
                "config": asdict(cfg),
            },
        )
        if not cfg.keep_final_checkpoints:  # the model is saved: a rerun has nothing left to resume
            shutil.rmtree(ckpt_root, ignore_errors=True)
    model.unet = accelerator.unwrap_model(unet)
    return TrainResult(model_dir, cfg.steps, seconds, throughput, skipped, last_loss, start_step)


def _sample_grid(
    model: DiffusionModel, unet: torch.nn.Module, ema: EMAModel, data: TrainingData, cfg: TrainConfig, path: Path
) -> None:
    captions = data.prompts(cfg.sample_count) if model.conditional else None
    with ema_weights(unet, ema):
        images = generate(
            model,
            list(range(cfg.sample_count)),
            seed=cfg.seed,
            steps=cfg.sample_steps,
            captions=captions,
            guidance=3.0 if captions else 1.0,
            batch_size=cfg.sample_count,
            device=next(unet.parameters()).device,
            progress=False,
            unet=unet,
        )
    with atomic_path(path) as tmp:
        Image.fromarray(grid(images)).save(tmp, format="PNG")
