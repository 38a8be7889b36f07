"""``python -m memguard.experiment.compare RUN_DIR... [--out DIR]``: one table (markdown + CSV) and plots across runs.

A RUN_DIR is a run directory with metrics.json, or a folder above several (a Hydra multirun directory):
every metrics.json below it is read. Runs are labelled by their Hydra overrides when present.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from memguard.common.atomic import atomic_path, write_bytes

COLUMNS = (
    "run",
    "arm",
    "training_samples",
    "extracted_images",
    "extracted_duplicated_images",
    "mia_auc",
    "mia_tpr_at_1pct_fpr",
    "heldout_loss",
    "dedup_precision",
    "dedup_recall",
    "seconds",
)


def find_runs(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if (path / "metrics.json").exists():
            found.append(path)
        else:
            found.extend(
                sorted(
                    p.parent
                    for p in path.rglob("metrics.json")
                    if p.parent.parent.name != "arms" and "extract" not in p.parent.parts[-1:]
                )
            )
    if not found:
        raise FileNotFoundError(f"no metrics.json under {[str(p) for p in paths]}")
    return found


def _overrides(run: Path) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    return [line.strip("- \n") for line in path.read_text().splitlines() if line.strip().startswith("-")]


def labels(runs: list[Path]) -> list[str]:
    """Each run's Hydra overrides, less those every run shares (in a sweep: the swept values)."""
    items = [_overrides(run) for run in runs]
    common = set.intersection(*(set(i) for i in items)) if len(items) > 1 else set()
    return [" ".join(o for o in i if o not in common) or run.name for run, i in zip(runs, items, strict=True)]


def rows(runs: list[Path]) -> list[dict[str, Any]]:
    out = []
    for run, label in zip(runs, labels(runs), strict=True):
        metrics = json.loads((run / "metrics.json").read_text())
        for arm, data in metrics["arms"].items():
            out.append(
                {
                    "run": label,
                    "arm": arm,
                    **{k: data.get(k) for k in COLUMNS[2:8]},
                    "dedup_precision": metrics["dedup"].get("precision"),
                    "dedup_recall": metrics["dedup"].get("recall"),
                    "seconds": metrics.get("seconds"),
                }
            )
    return out


def markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in table:
        lines.append("| " + " | ".join("" if row[c] is None else str(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="folder for comparison.md/.csv/.png")
    args = parser.parse_args(argv)
    table = rows(find_runs(args.runs))
    text = markdown(table)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_bytes(args.out / "comparison.md", (text + "\n").encode())
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
        write_bytes(args.out / "comparison.csv", buf.getvalue().encode())
        fig, ax = plt.subplots(figsize=(max(5, len(table) * 0.6), 3.5))
        ax.bar([f"{r['run']}\n{r['arm']}" for r in table], [r["extracted_images"] for r in table])
        ax.set_ylabel("extracted images")
        ax.tick_params(axis="x", labelsize=7)
        with atomic_path(args.out / "comparison.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)


if __name__ == "__main__":
    main()
