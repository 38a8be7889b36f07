"""The main job under several processes (what `accelerate launch` does on GPUs), here two CPU processes
in one gloo group started by torchrun: it completes, commits each cache entry once, and gives the same
figures as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.experiment.test_experiments import TINY

REPO = Path(__file__).resolve().parents[2]


def _figures(run: Path) -> dict[str, object]:
    arms = json.loads((run / "metrics.json").read_text())["arms"]
    return {a: (m["extracted_images"], m["heldout_loss"], m["mia_auc"], m["training_samples"]) for a, m in arms.items()}


def test_two_processes_match_one(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WDS_SECURE": "1", "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, launcher in (
        ("one", [sys.executable, "-m", "train"]),
        ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "train"]),
    ):
        out = tmp_path / name
        proc = subprocess.run(
            [
                *launcher,
                "+experiment=dedup",
                *TINY,
                f"cache_dir={tmp_path / ('cache-' + name)}",
                f"hydra.run.dir={out}",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = out
    assert _figures(runs["two"]) == _figures(runs["one"])
    trained = [p for p in (tmp_path / "cache-two" / "train").iterdir() if not p.name.startswith(".")]
    assert len(trained) == 2 and all((p / "_COMPLETE").exists() for p in trained)  # no .partial left
