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


def build_clusters(
    keys: pa.ChunkedArray, valid_rows: np.ndarray, decision: Decision, *, ranked: list[np.ndarray]
) -> pa.Table:
    """One row per ranked cluster; ``keys`` per unit, ``valid_rows`` each valid sample's unit row (the keys
    stay Arrow strings: taken, never turned into Python objects)."""
    firsts = np.array([m[0] for m in ranked], np.int64)
    sizes = np.array([len(m) for m in ranked], np.int64)
    members = np.concatenate(ranked) if ranked else np.zeros(0, np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]), pa.int32())
    member_keys = keys.take(pa.array(valid_rows[members])).combine_chunks()
    signals = [sorted({str(s) for s in decision.signal[m]} - {"", "keeper"}) for m in ranked]
    return pa.table(
        {
            "cluster_id": decision.labels[firsts].astype(np.int64),
            "size": sizes,
            "keeper": keys.take(pa.array(valid_rows[decision.keeper[firsts]])),
            "members": pa.ListArray.from_arrays(offsets, member_keys),
            "signals": signals,
        },
        schema=CLUSTERS_SCHEMA,
    )
