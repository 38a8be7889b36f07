"""What every step of one training run touches (prepared by ``train.loop``), and the counts kept across
its steps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from memguard.diffusion.models import DiffusionModel
from memguard.train.config import TrainConfig
from memguard.train.data import TrainingData
from memguard.train.device_steps import DeferredChecks
from memguard.train.mitigations import MitigationConfig


@dataclass
class TrainingRun:
    """What every step of one training run touches (prepared by ``_prepare``)."""

    cfg: TrainConfig
    mitigation: MitigationConfig
    accelerator: Accelerator
    model: DiffusionModel
    unet: torch.nn.Module  # prepared by accelerate
    forward: Callable[..., Any]  # the unet, compiled if asked
    optimizer: torch.optim.Optimizer
    ema: EMAModel
    params: list[torch.nn.Parameter]
    generator: torch.Generator  # the host generator: every draw on the CPU profile, resumed from checkpoints
    device_generator: torch.Generator | None  # reseeded per micro-batch (train.device_rng)
    deferred: DeferredChecks | None  # train.deferred_checks
    pin_memory: bool
    source: TrainingData
    vocab: list[str]
    micro: int  # micro-batch size (all processes together)
    out_dir: Path
    use_accelerate_state: bool

    @property
    def checkpoints(self) -> Path:
        return self.out_dir / "checkpoints"


@dataclass
class StepMeter:
    """Counts across steps: skipped steps, the last loss, images seen, timing and Wen's dropped samples."""

    start_step: int
    skipped: int = 0
    last_loss: float = math.nan
    images: int = 0
    wen_dropped: torch.Tensor | int = 0  # samples Wen's filter left out of the loss (this process's share)
    started: float = field(default_factory=time.perf_counter)
    warm_time: float = 0.0
    warm_images: int = 0

    def __post_init__(self) -> None:
        self.warm_time = self.started
