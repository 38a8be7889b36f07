"""Which images does the audit call featureless (memguard/extract/featureless.py)?

1. Every built-in emoji at 8 and at 32 px as its own reference set (no copies): the flagged emoji and, as
   the margin, the lowest stand-in score among the emoji that are not flagged.
2. With ``--experiment NAME --keys K ...``: that experiment's corpus, dedup and reference set rebuilt here
   (deterministic, so the keys are those of any run of it) and the verdict on the given keys — e.g. the
   images a run on another machine extracted.

python bench/featureless_check.py [--experiment dedup_gpu --keys tw000061 ...] [--out bench/featureless.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from memguard.common.cache import Cache
from memguard.configs.registry import register
from memguard.corpus.spec import open_corpus
from memguard.corpus.twemoji import emoji_files, emoji_name, render
from memguard.dedup.config import corpus_spec, limits
from memguard.dedup.pipeline import cached_dedup
from memguard.experiment.__main__ import spec_from
from memguard.extract.config import AuditConfig
from memguard.extract.featureless import featureless, stand_in_scores
from memguard.extract.inputs import audit_inputs

DELTA, FACTOR = AuditConfig().delta, AuditConfig().featureless_factor  # the audit's defaults


def every_emoji(resolution: int) -> dict[str, Any]:
    files = emoji_files()
    names = [emoji_name(f.stem) for f in files]
    images = np.stack([render(f, resolution) for f in files])
    everyone = np.arange(len(images))
    flags = featureless(images, everyone, images, groups=None, delta=DELTA, factor=FACTOR)
    scores = stand_in_scores(images, everyone, images, groups=None)
    own = scores.nearest == everyone
    unflagged_own = np.flatnonzero(own & ~flags)
    margin = unflagged_own[np.argmin(scores.score[unflagged_own])]
    return {
        "emoji": len(images),
        "featureless": {names[i]: round(float(scores.score[i]), 3) for i in np.flatnonzero(flags)},
        "lowest_not_featureless": {names[margin]: round(float(scores.score[margin]), 3)},
    }


def experiment_keys(experiment: str, keys: list[str], cache_dir: Path, out_dir: Path) -> dict[str, Any]:
    register()
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "memguard" / "configs"), version_base="1.3"):
        overrides = [f"+experiment={experiment}", f"cache_dir={cache_dir}", f"output={out_dir}"]
        values: dict[str, Any] = OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)  # type: ignore[assignment]
    spec = spec_from(values)
    corpus = open_corpus(corpus_spec(values["corpus"]), cache_dir, limits(values["limits"]))
    cleaned = cached_dedup(corpus, replace(spec.dedup, policy="remove"), cache=Cache(cache_dir), executor=spec.executor)
    ref = audit_inputs(corpus, cleaned, resolution=spec.model.resolution, cache_dir=cache_dir).reference
    copies, copy_of = ref.training_copies()
    which = np.array([ref.keys.index(k) for k in keys])
    flags = featureless(
        ref.images, which, copies, groups=copy_of, delta=spec.audit.delta, factor=spec.audit.featureless_factor
    )
    scores = stand_in_scores(ref.images, which, copies, groups=copy_of)
    return {
        "experiment": experiment,
        "resolution": spec.model.resolution,
        "keys": {
            k: {
                "caption": ref.captions[i],
                "cluster_size": int(ref.dup_counts[i]),
                "stand_in_score": round(float(s), 3),
                "featureless": bool(f),
            }
            for k, i, s, f in zip(keys, which, scores.score, flags, strict=True)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiment", default=None)
    parser.add_argument("--keys", nargs="*", default=[])
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--runs", type=Path, default=Path("runs/featureless_check"))
    parser.add_argument("--out", type=Path, default=Path("bench/featureless.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
        "delta": DELTA,
        "factor": FACTOR,
        "every_emoji": {str(r): every_emoji(r) for r in (8, 32)},
    }
    if args.experiment:
        report["experiment"] = experiment_keys(args.experiment, args.keys, args.cache.resolve(), args.runs.resolve())
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
