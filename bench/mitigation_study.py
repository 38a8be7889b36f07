"""The mitigation study over seeds: ``python -m train +experiment=mitigations`` once per seed, then per arm
the mean and spread of extraction (generate-and-filter and the nearest-image criterion), copy similarity,
membership inference, held-out loss and speed, and the privacy-utility plot (extracted images against
held-out loss, one point per arm, error bars over seeds).

python bench/mitigation_study.py [--seeds 0 1 2] [--out bench/mitigation_results.json] [-- overrides]

The JSON and the plot are rewritten after every seed: a study stopped part-way keeps what it measured,
and a rerun reuses every cached stage of the seeds already done.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import matplotlib
from seeds import run_seed, spread  # bench/seeds.py, beside this script

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FIGURES = (
    "extracted_images",
    "extracted_duplicated_images",
    "nearest_l2_extracted_images",
    "heldout_loss",
    "copy_sim_p95",
    "mia_auc",
    "images_per_second",
    "train_seconds",
)


def arm_figures(arm: dict[str, Any]) -> dict[str, Any]:
    nearest = arm.get("nearest_l2") or {}
    return {
        "mitigations": arm.get("mitigations", []),
        "extracted_images": arm["extracted_images"],
        "extracted_duplicated_images": arm["extracted_duplicated_images"],
        "nearest_l2_extracted_images": nearest.get("extracted_images"),
        "nearest_l2_median_duplicated": nearest.get("median_duplicated"),
        "nearest_l2_median_control": nearest.get("median_control"),
        "heldout_loss": arm["heldout_loss"],
        "copy_sim_p95": arm["copy_similarity"].get("p95"),
        "mia_auc": arm["mia_auc"],
        "images_per_second": arm["images_per_second"],
        "train_seconds": arm["train_seconds"],
        "wen_dropped_share": arm.get("wen_dropped_share"),
    }


def summarise(per_seed: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per arm and figure: mean, sample sd, min, max over the seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for arm, runs in per_seed.items():
        out[arm] = {}
        for key in FIGURES:
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                out[arm][key] = spread(values, "sd")
    return out


def tradeoff_plot(summary: dict[str, dict[str, dict[str, float]]], seeds: int, path: Path) -> None:
    """Privacy against utility: extracted images (lower: more private) vs held-out loss (lower: better)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for arm, s in summary.items():
        x, y = s["heldout_loss"], s["extracted_images"]
        ax.errorbar(x["mean"], y["mean"], xerr=x["sd"], yerr=y["sd"], fmt="o", capsize=3)
        ax.annotate(arm, (x["mean"], y["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("held-out denoising loss (utility: lower is better)")
    ax.set_ylabel("extracted training images (generate-and-filter)")
    ax.set_title(f"Mitigations: privacy vs utility (mean ± sd over {seeds} seed(s))")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def markdown_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """Mean ± sd per arm and figure, as bench/RESULTS.md records it."""
    columns = [
        ("extracted_images", "extracted (generate-and-filter)", 1),
        ("extracted_duplicated_images", "of which duplicated", 1),
        ("nearest_l2_extracted_images", "nearest ℓ2 ≤ 0.1", 1),
        ("copy_sim_p95", "copy sim p95", 3),
        ("mia_auc", "MIA AUC", 3),
        ("heldout_loss", "held-out loss", 4),
        ("images_per_second", "images/s", 0),
    ]
    lines = ["| arm | " + " | ".join(c[1] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for arm, s in summary.items():
        cells = [f"{s[k]['mean']:.{d}f} ± {s[k]['sd']:.{d}f}" if k in s else "—" for k, _, d in columns]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measured_wall(
    before: dict[str, Any], overrides: list[str], seed: int, per_seed: dict[str, list[dict[str, Any]]]
) -> float | None:
    """The wall seconds an earlier run of this script recorded for ``seed``, where it had the same
    overrides and the same figures for that seed as this run (so this run reused its cached stages)."""
    if before.get("overrides") != overrides or str(seed) not in before.get("wall_seconds", {}).get("per_seed", {}):
        return None

    def rows(arms: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        return {
            arm: {k: r.get(k) for k in ("extracted_images", "heldout_loss", "mia_auc")}
            for arm, runs in arms.items()
            for r in runs
            if r["seed"] == seed
        }

    same = rows(before.get("arms", {})) == rows(per_seed)
    return float(before["wall_seconds"]["per_seed"][str(seed)]) if same else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("runs/mitigation_study"))
    parser.add_argument("--out", type=Path, default=Path("bench/mitigation_results.json"))
    parser.add_argument("--plot", type=Path, default=Path("bench/mitigation_tradeoff.png"))
    parser.add_argument("--table", action="store_true", help="print the table of an existing --out JSON and stop")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())["summary"]))
        return
    per_seed: dict[str, list[dict[str, Any]]] = {}
    walls: dict[int, float] = {}
    chosen: dict[int, list[str]] = {}
    started = time.perf_counter()
    summary: dict[str, dict[str, dict[str, float]]] = {}
    before = json.loads(args.out.read_text()) if args.out.exists() else {}
    cached: list[int] = []
    for seed in args.seeds:
        metrics, walls[seed] = run_seed("mitigations", seed, args.runs / f"seed{seed}", args.overrides)
        for arm, data in metrics["arms"].items():
            per_seed.setdefault(arm, []).append({"seed": seed, **arm_figures(data)})
            if arm.endswith("+best"):
                chosen[seed] = data.get("mitigations", [])
        if (stored := measured_wall(before, args.overrides, seed, per_seed)) and stored > walls[seed]:
            walls[seed] = stored  # this run read the seed's stages from the cache: its wall is not the seed's cost
            cached.append(seed)
        summary = summarise(per_seed)
        report = {
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
            f"Python {platform.python_version()}",
            "overrides": args.overrides,
            "seeds": list(walls),
            "wall_seconds": {
                "per_seed": walls,
                "total": round(sum(walls.values()), 1),
                "this_run": round(time.perf_counter() - started, 1),
                "kept_from_the_run_that_computed": cached,
            },
            "best_mitigation_per_seed": chosen,
            "arms": per_seed,
            "summary": summary,
        }
        args.out.write_text(json.dumps(report, indent=2))
        tradeoff_plot(summary, len(walls), args.plot)
        print(json.dumps({"seed": seed, "wall_seconds": walls[seed]}), flush=True)
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
