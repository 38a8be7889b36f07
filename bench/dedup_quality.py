"""Dedup quality on the built-in corpus (default injection) against its ground truth, for the default
rule, the optional caption-embedding signal at several thresholds, and image-only dedup (captions
ignored: ``dedup.caption.enabled=false``) at several image thresholds, in one run.

    python bench/dedup_quality.py [--thresholds 0.9 0.95 0.98] [--image-only 0.975 0.95 0.9]

Precision/recall are over injected-copy pairs (natural variant groups are neither hits nor errors;
definitions in memguard/dedup/decide/evaluate.py). The caption embeddings are computed once and reused from the cache.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from memguard.common.cache import Cache
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.twemoji import TwemojiConfig
from memguard.dedup.decide.cluster import ClusterRule
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.dedup.signals.caption_embed import CaptionSemanticParams


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.9, 0.95, 0.98])
    parser.add_argument("--image-only", type=float, nargs="*", default=[0.975, 0.95, 0.9])
    parser.add_argument("--cache", default=".cache")
    parser.add_argument("--out", type=Path, default=Path("bench/dedup_quality.json"))
    args = parser.parse_args()
    corpus = open_corpus(CorpusSpec(twemoji=TwemojiConfig()), args.cache)
    settings: list[tuple[str, DedupParams]] = [("off (default)", DedupParams(write_shards=False))]
    for t in args.thresholds:
        settings.append(
            (
                f"semantic {t}",
                DedupParams(
                    caption_semantic=CaptionSemanticParams(enabled=True),
                    rule=ClusterRule(caption_semantic_threshold=t),
                    write_shards=False,
                ),
            )
        )
    for t in args.image_only:
        settings.append(
            (
                f"image-only {t}",
                DedupParams(caption_enabled=False, rule=ClusterRule(image_threshold=t), write_shards=False),
            )
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, params) in enumerate(settings):
            cache = Cache(Path(args.cache))
            start = time.perf_counter()
            result = run_dedup(corpus, params, out_dir=Path(tmp) / str(i), cache=cache)
            injected = result.stats["evaluation"]["injected"]  # type: ignore[index]
            rows.append(
                {
                    "setting": name,
                    "precision": injected["precision"],
                    "recall": injected["recall"],
                    "f1": injected["f1"],
                    "duplicates_by_signal": result.stats["duplicates_by_signal"],
                    "seconds": round(time.perf_counter() - start, 1),
                    "computed": list(cache.misses),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "samples": result.stats["input_units"],
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
