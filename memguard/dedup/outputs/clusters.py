"""``clusters.parquet``: every cluster of two or more — keeper, members, signals — largest first."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from memguard.dedup.decide.decision import Decision

CLUSTERS_SCHEMA = pa.schema(
    [
        ("cluster_id", pa.int64()),
        ("size", pa.int64()),
        ("keeper", pa.string()),
        ("members", pa.list_(pa.string())),
        ("signals", pa.list_(pa.string())),
    ]
)


def ranked_clusters(decision: Decision) -> list[np.ndarray]:
    """Members (ascending sample index) of each cluster of two or more, largest cluster first, then by id."""
    multi = np.flatnonzero(decision.finite & (decision.size > 1))
    if not len(multi):
        return []
    labels = decision.labels[multi]
    order = np.argsort(labels, kind="stable")
    ids, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    groups = np.split(multi[order], starts[1:])
    rank = np.lexsort((ids, -counts))
    return [groups[r] for r in rank]


def build_clusters(keys: np.ndarray, decision: Decision, ranked: list[np.ndarray]) -> pa.Table:
    """One row per ranked cluster; ``keys`` per valid sample."""
    signals = [sorted({str(s) for s in decision.signal[m]} - {"", "keeper"}) for m in ranked]
    return pa.table(
        {
            "cluster_id": [int(decision.labels[m[0]]) for m in ranked],
            "size": [len(m) for m in ranked],
            "keeper": [str(keys[decision.keeper[m[0]]]) for m in ranked],
            "members": [keys[m].tolist() for m in ranked],
            "signals": signals,
        },
        schema=CLUSTERS_SCHEMA,
    )
