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

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memguard.common import storage
from memguard.dedup.decide.groups import sorted_group_ids

DEFINITIONS = __doc__


def _pair_count(*codes: np.ndarray) -> int:
    """Unordered pairs of rows that agree on every one of ``codes`` (non-negative ints per row)."""
    if not len(codes[0]):
        return 0
    _, counts = np.unique(np.stack(codes, axis=1), axis=0, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def evaluate(keys: pa.Array | pa.ChunkedArray | list[str], cluster_ids: np.ndarray, ground_truth: Path) -> dict[str, object]:
    """Scores of the clustering of ``keys`` (valid samples) against the ground-truth parquet. Counted on
    integer codes (Arrow joins the keys to the truth): 10^7 samples cost a few int64 arrays, not a dict
    of Python strings."""
    with storage.open_regular(ground_truth) as fh:
        truth = pq.read_table(fh, columns=["key", "origin", "natural_group"])
    keys = pa.chunked_array([pa.array(keys, pa.string())]) if isinstance(keys, list) else keys
    found = pc.index_in(keys, value_set=truth.column("key").combine_chunks())  # null: no ground truth
    known = np.flatnonzero(pc.is_valid(found).to_numpy(zero_copy_only=False))
    rows = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)[known]
    origins = sorted_group_ids(truth.column("origin"))[rows]
    groups = sorted_group_ids(truth.column("natural_group"))[rows]
    clusters = np.asarray(cluster_ids, np.int64)[known]

    true_pairs = _pair_count(origins)
    predicted = _pair_count(clusters)
    tp = _pair_count(clusters, origins)
    # Pairs in one cluster and one natural group, minus those that are also same-origin.
    neutral = _pair_count(clusters, groups) - tp
    fp = predicted - tp - neutral
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    natural_true = _pair_count(groups) - true_pairs
    natural_recall = neutral / natural_true if natural_true else 1.0
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
        "cluster_purity": round(_purity(clusters, origins), 4),
        "samples_evaluated": len(known),
        "definitions": " ".join(DEFINITIONS.split()) if DEFINITIONS else "",
    }


def _purity(clusters: np.ndarray, origins: np.ndarray) -> float:
    """Σ over clusters of two or more of the largest same-origin count, over the samples in them."""
    if not len(clusters):
        return 1.0
    _, cluster_of, size = np.unique(clusters, return_inverse=True, return_counts=True)
    big = size[cluster_of] >= 2
    if not big.any():
        return 1.0
    pairs, counts = np.unique(np.stack([clusters[big], origins[big]], axis=1), axis=0, return_counts=True)
    order = np.lexsort((-counts, pairs[:, 0]))  # per cluster, its largest origin count first
    first = np.unique(pairs[order, 0], return_index=True)[1]
    return float(counts[order][first].sum() / big.sum())
