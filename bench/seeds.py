"""What the per-seed benches share: one run of the main job per seed, and mean / spread over seeds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def run_seed(experiment: str, seed: int, run: Path, overrides: list[str]) -> tuple[dict[str, Any], float]:
    """``python -m train +experiment=EXPERIMENT seed=SEED`` into ``run``: its metrics.json and wall seconds."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "train", f"+experiment={experiment}", f"seed={seed}", f"hydra.run.dir={run}"]
    subprocess.run([*command, *overrides], check=True)
    return json.loads((run / "metrics.json").read_text()), round(time.perf_counter() - start, 1)


def spread(values: list[float], sd_name: str = "std") -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max; ``sd_name`` names the deviation
    as each bench's JSON has always called it."""
    array = np.asarray(values, dtype=float)
    return {
        "mean": round(float(array.mean()), 4),
        sd_name: round(float(array.std(ddof=1)), 4) if len(array) > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
    }
