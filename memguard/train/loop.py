"""The training loop: one readable function (edm / nanoGPT style) under accelerate.

Exact resume: the sample order is a pure function of (seed, batch number) and every random draw comes
from a seeded generator — the run's host generator, whose state is checkpointed, or a device generator
reseeded per micro-batch (``train.device_rng``) — so a run killed at any step — even inside a checkpoint
save — and resumed ends with bit-identical weights on the CPU.

``train_model`` is the flat loop; its helpers are named for what they do: ``_prepare`` (accelerator,
optimizer, EMA, resume), ``train.micro_batch.micro_batch_loss`` (the loss with the mitigation hooks),
``_skip_step`` / ``_read_checks`` (non-finite steps, on the host or read from the device),
``_checkpoint``, ``_finish``. What the steps share is ``train.run_state.TrainingRun``. The resume state
(generator, EMA, optimizer) is packed and restored by ``train.checkpoint.training_state`` and
``restore_training_state``; the sampler position is the step.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from diffusers.training_utils import EMAModel
from PIL import Image
from tqdm import tqdm

from memguard.common.atomic import atomic_path
from memguard.common.progress import progress_label
from memguard.diffusion.images import ImageSet
from memguard.diffusion.models import DiffusionModel, trainable_parameters
from memguard.diffusion.sampling import ema_weights, generate, grid
from memguard.diffusion.saved import save_model
from memguard.train.checkpoint import (
    ACCELERATE_STATE,
    begin_checkpoint,
    finish_checkpoint,
    latest_checkpoint,
    partial_folder,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from memguard.train.config import TrainConfig
from memguard.train.data import MemmapData, TrainingData
from memguard.train.device_steps import DeferredChecks
from memguard.train.micro_batch import micro_batch_loss
from memguard.train.mitigations import (
    MitigationConfig,
    vocabulary,
)
from memguard.train.result import TrainResult, write_train_result
from memguard.train.run_state import StepMeter, TrainingRun

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many steps with a non-finite loss."""


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine decay to zero at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


MODEL_FOLDER = "model"  # the trained model (a diffusers folder) inside ``out_dir``
WARMUP_STEPS = 10  # throughput is reported from this step on


def train_model(
    model: DiffusionModel,
    data: ImageSet | TrainingData,
    cfg: TrainConfig,
    *,
    out_dir: str | Path,
    mitigation: MitigationConfig | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` for ``cfg.steps`` steps into ``out_dir`` (resuming from its checkpoints):
    the model (EMA weights) in ``out_dir/model``, ``train_result.json``, sample grids and logs."""
    run, start_step = _prepare(model, data, cfg, out_dir=Path(out_dir), mitigation=mitigation or MitigationConfig())
    accelerator = run.accelerator
    batches = run.source.batches(
        start_step * cfg.grad_accum, run.micro, rank=accelerator.process_index, world=accelerator.num_processes
    )
    meter = StepMeter(start_step)
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc=progress_label("train"),
               unit="step", disable=not accelerator.is_main_process, mininterval=1.0)  # fmt: skip
    for step in bar:
        if step == start_step + WARMUP_STEPS:
            meter.warm_time, meter.warm_images = time.perf_counter(), meter.images
        lr = learning_rate(cfg, step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=accelerator.device)
        for m in range(cfg.grad_accum):
            loss, n, dropped = micro_batch_loss(run, next(batches), step * cfg.grad_accum + m)
            with accelerator.no_sync(run.unet) if m < cfg.grad_accum - 1 else nullcontext():
                accelerator.backward(loss)
            step_loss += loss.detach()
            meter.images += n * accelerator.num_processes
            meter.wen_dropped += dropped
        # The clipped-gradient norm is computed anyway; a NaN/Inf anywhere in the gradients shows up in it.
        grad_norm = accelerator.clip_grad_norm_(run.params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if run.deferred is not None:
            run.deferred.update(run.optimizer, step_loss, grad_norm)
        else:
            if not (bool(torch.isfinite(step_loss)) and bool(torch.isfinite(grad_norm))):
                _skip_step(run, meter, step)
                continue
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            run.ema.step(run.params)
            meter.last_loss = float(step_loss)
        done = step + 1
        sample = cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps)
        checkpoint = cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps
        # Deferred checks are read (and logged) also before a sample grid or checkpoint uses the EMA.
        if done % cfg.log_every == 0 or done == cfg.steps or (run.deferred is not None and (sample or checkpoint)):
            grad_norm_value = _read_checks(run, meter, done) if run.deferred is not None else float(grad_norm)
            rate = meter.images / max(1e-9, time.perf_counter() - meter.started)
            accelerator.log({"loss": meter.last_loss, "lr": lr, "grad_norm": grad_norm_value, "images_per_s": rate},
                            step=done)  # fmt: skip
            bar.set_postfix(loss=f"{meter.last_loss:.4f}", img_s=f"{rate:.0f}")
        if sample and accelerator.is_main_process:
            _sample_grid(run, run.out_dir / "samples" / f"{done:08d}.png")
        if checkpoint:
            _checkpoint(run, done)
    return _finish(run, meter)


def _prepare(
    model: DiffusionModel, data: ImageSet | TrainingData, cfg: TrainConfig, *, out_dir: Path, mitigation: MitigationConfig
) -> tuple[TrainingRun, int]:
    """The accelerator, optimizer, EMA and generator, restored from the latest checkpoint if any; and the
    step to start at."""
    # The same device choice as the experiment's PartialState; auto settings are resolved for it.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = Accelerator(
        mixed_precision=cfg.precision(device),
        log_with=None if cfg.log_with == "none" else cfg.log_with,
        project_dir=str(out_dir),
        cpu=device.type == "cpu",
    )
    device = accelerator.device
    torch.manual_seed(cfg.seed)
    unet = model.unet.to(device)
    if cfg.enabled("channels_last", device):
        unet = unet.to(memory_format=torch.channels_last)
    if model.vae is not None:
        model.vae.to(device)
    params = trainable_parameters(model)
    fused = cfg.enabled("fused_adam", device)
    # Multi-tensor updates (one op over all parameters, not one per tensor) also on the CPU, where torch
    # does not pick them by default; the fused kernel replaces them where asked (by default on the GPU).
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay,
                                  fused=fused, foreach=not fused)  # fmt: skip
    ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True, power=0.75, foreach=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    source = MemmapData(data, cfg.seed, random_flip=cfg.random_flip) if isinstance(data, ImageSet) else data
    vocab = vocabulary(source.vocabulary_captions()) if {"rc", "rt"} & set(mitigation.kinds) else []
    start_step = 0
    latest = latest_checkpoint(out_dir / "checkpoints")
    if latest is not None:
        start_step = int(restore_training_state(latest, model.unet, ema, optimizer=optimizer, generator=generator)["step"])
        log.info("resuming from %s (step %d)", latest, start_step)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    if latest is not None and (latest / ACCELERATE_STATE).is_dir():
        accelerator.load_state(str(latest / ACCELERATE_STATE))
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    # Under FSDP/DeepSpeed the optimizer and EMA are theirs to step: the host-side check stays.
    deferred = cfg.enabled("deferred_checks", device) and fused and not sharded
    accelerator.init_trackers("train", config={k: str(v) for k, v in asdict(cfg).items()})
    micro = cfg.batch_size // cfg.grad_accum
    if micro * cfg.grad_accum != cfg.batch_size or micro % accelerator.num_processes:
        raise ValueError(
            f"batch_size {cfg.batch_size} must split into {cfg.grad_accum} micro-batches "
            f"divisible by {accelerator.num_processes} processes"
        )
    run = TrainingRun(
        cfg=cfg,
        mitigation=mitigation,
        accelerator=accelerator,
        model=model,
        unet=unet,
        forward=torch.compile(unet, mode=cfg.compile_mode) if cfg.enabled("compile", device) else unet,
        optimizer=optimizer,
        ema=ema,
        params=params,
        generator=generator,
        device_generator=torch.Generator(device=device) if cfg.enabled("device_rng", device) else None,
        deferred=DeferredChecks(ema, params, device) if deferred else None,
        pin_memory=cfg.enabled("pin_memory", device),
        source=source,
        vocab=vocab,
        micro=micro,
        out_dir=out_dir,
        use_accelerate_state=cfg.checkpoint_format == "accelerate" or sharded,
    )
    return run, start_step


def _skip_step(run: TrainingRun, meter: StepMeter, step: int) -> None:
    """Drop a step whose loss or gradients are not finite; too many in all and the run stops."""
    run.optimizer.zero_grad(set_to_none=True)
    meter.skipped += 1
    log.warning("non-finite loss at step %d (%d skipped so far)", step, meter.skipped)
    if meter.skipped > run.cfg.max_bad_steps:
        raise TrainingDiverged(f"{meter.skipped} steps with a non-finite loss (limit {run.cfg.max_bad_steps})")


def _read_checks(run: TrainingRun, meter: StepMeter, done: int) -> float:
    """Read the device-side checks (train.deferred_checks): the loss, the steps skipped since the last read
    (warned, and the run halted past ``max_bad_steps``); the gradient norm returned."""
    assert run.deferred is not None
    reading = run.deferred.read()
    meter.last_loss = reading.last_loss
    new = reading.skipped - meter.skipped
    meter.skipped = reading.skipped
    if new:
        log.warning("%d step(s) with a non-finite loss skipped before step %d (%d so far)", new, done, meter.skipped)
    if meter.skipped > run.cfg.max_bad_steps:
        raise TrainingDiverged(f"{meter.skipped} steps with a non-finite loss (limit {run.cfg.max_bad_steps})")
    return reading.grad_norm


def _checkpoint(run: TrainingRun, done: int) -> None:
    """A checkpoint after step ``done``: in accelerate's format (every process writes its shard of the
    state, then one commits) or ours (the main process writes everything)."""
    accelerator, cfg, root = run.accelerator, run.cfg, run.checkpoints
    if run.use_accelerate_state:
        if accelerator.is_main_process:
            begin_checkpoint(root, done)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial_folder(root, done) / ACCELERATE_STATE), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            tensors, state = training_state(None, run.ema, None, generator=run.generator)
            finish_checkpoint(root, done, tensors=tensors, state=state, keep=cfg.keep_checkpoints)
    elif accelerator.is_main_process:
        tensors, state = training_state(accelerator.unwrap_model(run.unet), run.ema, run.optimizer, generator=run.generator)
        save_checkpoint(root, done, tensors=tensors, state=state, keep=cfg.keep_checkpoints)
    accelerator.wait_for_everyone()


def _finish(run: TrainingRun, meter: StepMeter) -> TrainResult:
    """Save the EMA model and ``train_result.json`` (main process), drop the checkpoints unless kept."""
    accelerator, cfg = run.accelerator, run.cfg
    if run.deferred is not None:
        _read_checks(run, meter, cfg.steps)
    seconds = time.perf_counter() - meter.started
    throughput = (meter.images - meter.warm_images) / max(time.perf_counter() - meter.warm_time, 1e-9)
    # Not accelerator.end_training(): it also destroys the process group, and an experiment trains several
    # arms (and waits on barriers) in one process group.
    for tracker in accelerator.trackers:
        tracker.finish()
    wen = "wen" in run.mitigation.kinds
    result = TrainResult(
        steps=cfg.steps,
        resumed_from=meter.start_step,
        seconds=round(seconds, 2),
        images_per_second=round(throughput, 1),
        skipped_steps=meter.skipped,
        final_loss=meter.last_loss,
        # The main process's share of its own samples (under several processes, each sees a slice).
        wen_dropped_share=round(int(meter.wen_dropped) * accelerator.num_processes / max(1, meter.images), 6)
        if wen
        else None,
        config=json.loads(json.dumps(asdict(cfg), default=str)),  # as train_result.json holds it
    )
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(run.unet)
        with ema_weights(final, run.ema):
            save_model(run.model, run.out_dir / MODEL_FOLDER, final)
        run.ema.copy_to([p for p in final.parameters() if p.requires_grad])  # the model keeps the EMA weights
        write_train_result(run.out_dir, result)
        if not cfg.keep_final_checkpoints:  # the model is saved: a rerun has nothing left to resume
            shutil.rmtree(run.checkpoints, ignore_errors=True)
    run.model.unet = accelerator.unwrap_model(run.unet)
    return result


def _sample_grid(run: TrainingRun, path: Path) -> None:
    model, cfg = run.model, run.cfg
    unet = run.accelerator.unwrap_model(run.unet)
    captions = run.source.prompts(cfg.sample_count) if model.conditional else None
    with ema_weights(unet, run.ema):
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
