"""Is the copy guard's threshold right? Its verdicts on a trained model's own generations, against the
extraction attack's.

    python bench/guard_validation.py runs/dedup/<timestamp> [--cache .cache] [--out bench/guard_validation.json]

A main job's run folder holds each arm's 4,000 audited generations (``arms/<arm>/extract/generations``)
and, per generation, whether Carlini et al.'s criterion calls it an extracted training image
(``matches.parquet``: normalized ℓ2 < δ). The guard compares each generation with the raw training images
at the model's resolution (the cached image set the raw arm trained on), so it sees what the attack sees.
For each threshold: the share of extracted generations the guard flags (recall), and the share of the
other generations it flags — in the raw arm (which memorized) and in the dedup arm (which extracted
nothing): its false alarms. The default is chosen on the even-numbered generations (the highest threshold
that keeps recall ≥ 0.99 there) and reported on the odd ones.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from memguard.diffusion.images import load_image_set
from memguard.extract.guard import CopyGuard

THRESHOLDS = (0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995)


def arm_generations(run: Path, arm: str) -> tuple[np.ndarray, np.ndarray]:
    folder = run / "arms" / arm / "extract"
    chunks = sorted((folder / "generations").glob("*.npy"), key=lambda p: int(p.name.split("-")[0]))
    images = np.concatenate([np.load(p, allow_pickle=False) for p in chunks])
    matches = pq.read_table(folder / "matches.parquet", columns=["generation", "extracted"]).to_pydict()
    extracted = np.zeros(len(images), bool)
    extracted[np.asarray(matches["generation"])[np.asarray(matches["extracted"])]] = True
    return images, extracted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--out", type=Path, default=Path("bench/guard_validation.json"))
    args = parser.parse_args()
    stats = json.loads((args.run / "dedup" / "stats.json").read_text())
    metrics = json.loads((args.run / "metrics.json").read_text())
    resolution = metrics["config"]["model"]["resolution"]
    raw = load_image_set(stats["corpus"]["location"], resolution, args.cache)
    guard = CopyGuard(list(np.asarray(raw.images)), raw.keys)

    started = time.perf_counter()
    sims = {}
    extracted = {}
    for arm in ("raw", "dedup"):
        images, extracted[arm] = arm_generations(args.run, arm)
        sims[arm] = np.asarray([v.similarity for v in guard.check(list(images))])
    seconds = time.perf_counter() - started

    def rates(half: int) -> list[dict[str, float]]:
        rows = []
        for t in THRESHOLDS:
            raw_pick = np.arange(len(sims["raw"])) % 2 == half
            dedup_pick = np.arange(len(sims["dedup"])) % 2 == half
            hits = sims["raw"] >= t
            rows.append({
                "threshold": t,
                "recall_on_extracted": round(float(hits[raw_pick & extracted["raw"]].mean()), 4),
                "flagged_raw_not_extracted": round(float(hits[raw_pick & ~extracted["raw"]].mean()), 4),
                "flagged_dedup": round(float((sims["dedup"] >= t)[dedup_pick].mean()), 4),
            })  # fmt: skip
        return rows

    choosing, reporting = rates(0), rates(1)
    chosen = max((r["threshold"] for r in choosing if r["recall_on_extracted"] >= 0.99), default=min(THRESHOLDS))
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "run": str(args.run),
        "training_images": len(raw.keys),
        "generations": {arm: len(s) for arm, s in sims.items()},
        "extracted_generations": {arm: int(e.sum()) for arm, e in extracted.items()},
        "guard_seconds_for_all_generations": round(seconds, 1),
        "chosen_threshold_on_even_generations": chosen,
        "reporting_half_at_chosen": next(r for r in reporting if r["threshold"] == chosen),
        "reporting_half_at_default_0.975": next(r for r in reporting if r["threshold"] == 0.975),
        "choosing_half": choosing,
        "reporting_half": reporting,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("choosing_half", "reporting_half")}, indent=2))
    for row in reporting:
        print(row)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
