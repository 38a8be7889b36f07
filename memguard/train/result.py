"""What a training run reports: ``TrainResult``, written as ``train_result.json`` beside the model and
read back from it by one function each."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memguard.common.atomic import write_json

RESULT_FILE = "train_result.json"


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """steps: the configured total; resumed_from: the step a resumed run started at (0 otherwise);
    seconds: wall time of this run's steps; images_per_second: throughput after the first 10 steps;
    skipped_steps: steps with a non-finite loss, dropped; final_loss: the last step's loss;
    wen_dropped_share: the share of samples Wen's filter left out of the loss (None without it);
    config: the TrainConfig as a dict."""

    steps: int
    resumed_from: int
    seconds: float
    images_per_second: float
    skipped_steps: int
    final_loss: float
    wen_dropped_share: float | None = None
    config: dict[str, Any] = field(default_factory=dict)


def write_train_result(folder: Path, result: TrainResult) -> None:
    write_json(folder / RESULT_FILE, asdict(result))


def read_train_result(folder: Path) -> TrainResult:
    return TrainResult(**json.loads((folder / RESULT_FILE).read_text()))
