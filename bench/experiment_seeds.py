"""The main job with several seeds: mean and spread of extraction (raw vs dedup) and held-out loss, and
the dose response (Carlini et al., Fig. 5): per seed and pooled over seeds, each duplicate-count
bucket's images and extracted images per arm, how many buckets hold >= 5 images, and whether the raw
arm's extraction rate never falls from the lowest to the highest populated bucket.

python bench/experiment_seeds.py [--seeds 0 1 2] [--out bench/experiment_seeds.json] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import json
import platform
from itertools import pairwise
from pathlib import Path

from seeds import run_seed, spread  # bench/seeds.py, beside this script

from memguard.extract.stratify import BUCKETS

POPULATED = 5  # images a bucket needs to count in the dose response


def _monotone(buckets: dict[str, dict[str, float]]) -> bool:
    """Whether the extraction rate never falls across the populated buckets, in BUCKETS order."""
    rates = [
        buckets[name]["extracted"] / buckets[name]["images"]
        for _, _, name in BUCKETS
        if name in buckets and buckets[name]["images"] >= POPULATED
    ]
    return all(b >= a for a, b in pairwise(rates))


def _table(arms: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """Each arm's buckets as [extracted, images]."""
    return {arm: {k: [v["extracted"], v["images"]] for k, v in b.items()} for arm, b in arms.items()}


def dose_response(dose: list[dict[str, dict[str, dict[str, float]]]], seeds: list[int]) -> dict[str, object]:
    """Per seed and pooled: each arm's (extracted, images) per bucket, populated buckets, monotonicity."""
    per_seed = []
    for seed, arms in zip(seeds, dose, strict=True):
        raw = arms.get("raw", {})
        per_seed.append(
            {
                "seed": seed,
                "buckets": _table(arms),
                "populated_buckets": sum(v["images"] >= POPULATED for v in raw.values()),
                "raw_rate_non_decreasing": _monotone(raw),
            }
        )
    pooled: dict[str, dict[str, dict[str, float]]] = {}
    for arms in dose:
        for arm, buckets in arms.items():
            for name, v in buckets.items():
                cell = pooled.setdefault(arm, {}).setdefault(name, {"extracted": 0, "images": 0})
                cell["extracted"] += v["extracted"]
                cell["images"] += v["images"]
    return {
        "per_seed": per_seed,
        "pooled": _table(pooled),
        "pooled_raw_rate_non_decreasing": _monotone(pooled.get("raw", {})),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiment", default="dedup")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_seeds"))
    parser.add_argument("--out", type=Path, default=Path("bench/experiment_seeds.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    dose: list[dict[str, dict[str, dict[str, float]]]] = []
    for seed in args.seeds:
        metrics, wall = run_seed(args.experiment, seed, args.runs / f"seed{seed}", args.overrides)
        arms = metrics["arms"]
        results.append(
            {
                "seed": seed,
                "wall_seconds": wall,
                # As recorded when each arm was trained: a rerun whose training came from the cache has a
                # wall far below their sum, and the main job's cold wall is about wall + their sum.
                **{f"{arm}_train_seconds": arms[arm]["train_seconds"] for arm in arms},
                "training_from_cache": wall < sum(arms[arm]["train_seconds"] for arm in arms),
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
        dose.append({arm: arms[arm]["extraction_by_duplicate_count"] for arm in arms})
        print(json.dumps(results[-1]), flush=True)
    summary = {}
    for key in results[0]:
        if key not in ("seed", "training_from_cache"):
            summary[key] = spread([r[key] for r in results])
    report = {
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "experiment": args.experiment,
        "overrides": args.overrides,
        "runs": results,
        "summary": summary,
        "dose_response": dose_response(dose, args.seeds),
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
