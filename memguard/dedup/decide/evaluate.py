"""Found duplicates versus injected ground truth: pair precision, recall, F1 and cluster purity.

Definitions (also written next to the numbers in stats.json):
- predicted pairs: every unordered pair of valid samples in one predicted cluster;
- true pairs: every pair of samples that are copies of one original (same ``origin``);
- neutral pairs: pairs of different originals in one natural group (skin-tone variants): neither a hit
  nor an error for the injected-copy figures; they are scored separately as the natural-group recall;
- precision = TP / (TP + FP), FP = predicted pairs that are neither true nor neutral;
- recall = TP / true pairs; purity = Σ over clusters of the largest same-origin count / samples in
  clusters of size ≥ 2.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from memguard.common import storage

DEFINITIONS = __doc__


def _pair_count(counts: Counter[Any]) -> int:
    return sum(c * (c - 1) // 2 for c in counts.values())


def evaluate(keys: list[str], cluster_ids: np.ndarray, ground_truth: Path) -> dict[str, object]:
    """Scores of the clustering of ``keys`` (valid samples) against the ground-truth parquet."""
    with storage.open_regular(ground_truth) as fh:
        truth = pq.read_table(fh).to_pydict()
    origin_of = dict(zip(truth["key"], truth["origin"], strict=True))
    group_of = dict(zip(truth["key"], truth["natural_group"], strict=True))
    known = [i for i, k in enumerate(keys) if k in origin_of]
    origins = [origin_of[keys[i]] for i in known]
    groups = [group_of[keys[i]] for i in known]
    clusters = [int(cluster_ids[i]) for i in known]

    true_pairs = _pair_count(Counter(origins))
    predicted = _pair_count(Counter(clusters))
    tp = _pair_count(Counter(zip(clusters, origins, strict=True)))
    # Pairs in one cluster and one natural group, minus those that are also same-origin.
    same_cluster_group = _pair_count(Counter(zip(clusters, groups, strict=True)))
    neutral = same_cluster_group - tp
    fp = predicted - tp - neutral
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    natural_true = _pair_count(Counter(groups)) - true_pairs
    natural_recall = neutral / natural_true if natural_true else 1.0

    members: dict[int, list[str]] = {}
    for c, o in zip(clusters, origins, strict=True):
        members.setdefault(c, []).append(o)
    big = [m for m in members.values() if len(m) >= 2]
    in_big = sum(len(m) for m in big)
    purity = sum(Counter(m).most_common(1)[0][1] for m in big) / in_big if in_big else 1.0
    return {
        "injected": {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "true_pairs": true_pairs,
            "found_pairs": tp,
            "false_pairs": fp,
        },
        "natural_groups": {"pairs": natural_true, "found_pairs": neutral, "recall": round(natural_recall, 4)},
        "cluster_purity": round(purity, 4),
        "samples_evaluated": len(known),
        "definitions": " ".join(DEFINITIONS.split()) if DEFINITIONS else "",
    }
