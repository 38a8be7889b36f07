"""The ``train`` config group: the training budget, optimiser, data source, checkpoints and logging."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from memguard.common.config import SWITCH_VALUES, ConfigError, in_range, one_of, switch_value


@dataclass(frozen=True)
class TrainConfig:
    """The training budget and optimiser; the defaults are the 2-core CPU profile (``train=cpu``).

    steps: optimizer steps; batch_size: samples per step over all devices (split into ``grad_accum``
    micro-batches). lr warms up linearly over ``warmup_steps``, then follows ``lr_schedule``; AdamW with
    ``weight_decay`` and ``adam_betas``; gradients clipped to norm ``grad_clip``; an EMA of the weights
    with ``ema_decay`` (with warm-up) is what gets saved. caption_dropout: share of captions replaced by the
    null condition (classifier-free guidance). mixed_precision: auto (bf16 on a CUDA device that has it, else
    no) | no | bf16 | fp16 (GPU). seed: every random
    draw. checkpoint_every / keep_checkpoints: resumable checkpoints and how many stay; checkpoint_format:
    memguard (safetensors + JSON, no pickle: one process or DDP) | accelerate (``accelerator.save_state``,
    loaded with ``torch.load(weights_only=True)``; what FSDP and DeepSpeed need, chosen for them
    automatically); sample_every /
    sample_count / sample_steps: sample grids during training (0: never); log_every: scalars to the
    ``log_with`` tracker (tensorboard | wandb | none); keep_final_checkpoints: keep the resumable checkpoints
    after the model is saved (they are several times its size: removed by default); data: memmap (decode
    the corpus once into a memmap: fastest for small corpora) | stream (read the shards as training goes:
    any size; ``shuffle_buffer`` samples, ``loader_workers`` DataLoader processes) | auto (stream when the
    shards hold more than ``memmap_max_gib``); random_crop (stream only) / random_flip: augmentations;
    max_bad_steps: non-finite steps skipped in all (not only in a row) before the run halts.
    Speed switches, each ``auto`` (on with CUDA, off on the CPU, where they gain nothing or change the
    numbers the CPU profile's results were measured with), ``on``/``true`` or ``off``/``false``:
    channels_last; compile (``torch.compile`` of the unet, ``compile_mode`` as torch names it);
    fused_adam (one fused AdamW kernel); device_rng (noise, timesteps and caption dropout drawn on the
    device from a generator seeded per micro-batch, not on the host: resume stays exact without its state);
    deferred_checks (the non-finite check, loss and skip count stay on the device and are read every
    ``log_every`` steps, at checkpoints and at the end: a non-finite step is still skipped, by the fused
    AdamW's ``found_inf`` and a masked EMA update, and the run halts at the first read past
    ``max_bad_steps``; needs fused_adam and no fp16 loss scaling); pin_memory (batches copied to the GPU
    from page-locked memory without waiting; CUDA only).
    """

    steps: int = 2000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # constant | cosine (to zero at the last step: a quiet end sharpens samples)
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    mixed_precision: str = "auto"
    seed: int = 0
    checkpoint_every: int = 500
    checkpoint_format: str = "memguard"
    keep_checkpoints: int = 2
    sample_every: int = 1000
    sample_count: int = 32
    sample_steps: int = 25
    log_every: int = 50
    max_bad_steps: int = 20
    log_with: str = "tensorboard"
    keep_final_checkpoints: bool = False
    data: str = "auto"
    memmap_max_gib: float = 2.0
    shuffle_buffer: int = 1000
    loader_workers: int = 0
    random_crop: bool = False
    random_flip: bool = False
    channels_last: bool | str = "auto"
    compile: bool | str = "auto"
    compile_mode: str = "default"
    fused_adam: bool | str = "auto"
    device_rng: bool | str = "auto"
    deferred_checks: bool | str = "auto"
    pin_memory: bool | str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "sample_count", "sample_steps", "log_every", "max_bad_steps"):
            in_range(f"train.{name}", getattr(self, name), lo=1)
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "sample_every", "seed"):
            in_range(f"train.{name}", getattr(self, name), lo=0)
        in_range("train.lr", self.lr, lo=1e-12, hi=10.0)
        in_range("train.weight_decay", self.weight_decay, lo=0.0)
        in_range("train.grad_clip", self.grad_clip, lo=0.0)
        in_range("train.ema_decay", self.ema_decay, lo=0.0, hi=1.0)
        in_range("train.caption_dropout", self.caption_dropout, lo=0.0, hi=1.0)
        one_of("train.lr_schedule", self.lr_schedule, ("constant", "cosine"))
        one_of("train.mixed_precision", self.mixed_precision, ("auto", "no", "bf16", "fp16"))
        one_of("train.log_with", self.log_with, ("tensorboard", "wandb", "none"))
        one_of("train.data", self.data, ("auto", "memmap", "stream"))
        one_of("train.checkpoint_format", self.checkpoint_format, ("memguard", "accelerate"))
        in_range("train.shuffle_buffer", self.shuffle_buffer, lo=1)
        in_range("train.loader_workers", self.loader_workers, lo=0)
        in_range("train.memmap_max_gib", self.memmap_max_gib, lo=0.0)
        if self.random_crop and self.data == "memmap":
            raise ConfigError("train.random_crop needs train.data=stream (the memmap holds centre crops)")
        if self.log_with == "wandb" and importlib.util.find_spec("wandb") is None:
            raise ConfigError("train.log_with=wandb needs the wandb package (pip install wandb)")
        for name in SWITCHES:
            one_of(f"train.{name}", getattr(self, name), SWITCH_VALUES)
        one_of("train.compile_mode", self.compile_mode, ("default", "reduce-overhead", "max-autotune",
                                                         "max-autotune-no-cudagraphs"))  # fmt: skip
        if switch_value(self.deferred_checks) is True and switch_value(self.fused_adam) is False:
            raise ConfigError("train.deferred_checks=on needs train.fused_adam (its found_inf skips a step on the device)")
        if switch_value(self.deferred_checks) is True and self.mixed_precision == "fp16":
            raise ConfigError("train.deferred_checks=on cannot run with fp16 (its loss scaler owns the skip decision)")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"train.batch_size {self.batch_size} is not divisible by train.grad_accum {self.grad_accum}"
            )

    def precision(self, device: torch.device) -> str:
        """The mixed precision accelerate runs with on ``device`` (``auto`` resolved)."""
        if self.mixed_precision != "auto":
            return self.mixed_precision
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"

    def enabled(self, name: str, device: torch.device) -> bool:
        """Whether speed switch ``name`` is on for a run on ``device``: ``auto`` means on with CUDA, and
        deferred_checks' ``auto`` also needs fused AdamW on and no fp16."""
        value = switch_value(getattr(self, name))
        if value is not None:
            return value and (name != "pin_memory" or device.type == "cuda")
        if name == "deferred_checks":
            return self.enabled("fused_adam", device) and self.precision(device) != "fp16" and device.type == "cuda"
        return device.type == "cuda"


SWITCHES = ("channels_last", "compile", "fused_adam", "device_rng", "deferred_checks", "pin_memory")
