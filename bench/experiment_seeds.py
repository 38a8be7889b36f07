"""The main job with several seeds: mean and spread of extraction (raw vs dedup) and held-out loss.

python bench/experiment_seeds.py [--seeds 0 1 2] [--out bench/experiment_seeds.json] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiment", default="dedup")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_seeds"))
    parser.add_argument("--out", type=Path, default=Path("bench/experiment_seeds.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        run = args.runs / f"seed{seed}"
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "train",
                f"+experiment={args.experiment}",
                f"seed={seed}",
                f"hydra.run.dir={run}",
                *args.overrides,
            ],
            check=True,
        )
        metrics = json.loads((run / "metrics.json").read_text())
        arms = metrics["arms"]
        results.append(
            {
                "seed": seed,
                "wall_seconds": round(time.perf_counter() - start, 1),
                **{f"{arm}_extracted": arms[arm]["extracted_images"] for arm in arms},
                **{f"{arm}_extracted_duplicated": arms[arm]["extracted_duplicated_images"] for arm in arms},
                **{f"{arm}_heldout_loss": arms[arm]["heldout_loss"] for arm in arms},
                **{f"{arm}_mia_auc": arms[arm]["mia_auc"] for arm in arms},
                **(
                    {"heldout_loss_ratio": metrics["reduction"]["heldout_loss_ratio"]}
                    if metrics.get("reduction")
                    else {}
                ),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    summary = {}
    for key in results[0]:
        if key != "seed":
            values = np.array([r[key] for r in results], dtype=float)
            summary[key] = {
                "mean": round(float(values.mean()), 4),
                "std": round(float(values.std(ddof=1)), 4) if len(values) > 1 else 0.0,
                "min": float(values.min()),
                "max": float(values.max()),
            }
    report = {
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "experiment": args.experiment,
        "overrides": args.overrides,
        "runs": results,
        "summary": summary,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
