"""The counts of ``stats.json`` (the pipeline adds timing, cache use, parameters and evaluation)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa


def size_histogram(sizes: list[int]) -> dict[str, int]:
    """Clusters per size bucket (1, 2, 3-4, 5-8, ...), counted once per cluster."""
    hist: Counter[str] = Counter()
    for s in sizes:
        if s <= 2:
            hist[str(s)] += 1
        else:
            hi = 1 << (int(s) - 1).bit_length()
            hist[f"{hi // 2 + 1}-{hi}"] += 1
    return dict(sorted(hist.items(), key=lambda kv: int(kv[0].split("-")[0])))


def _counts(values: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(values.astype(str), return_counts=True)
    return {str(k): int(v) for k, v in zip(names, counts, strict=True)}


def build_stats(
    manifest: pa.Table,
    *,
    valid_samples: int,
    cluster_sizes: list[int],
    clusters_with_duplicates: int,
    policy: str,
    shards_written: int,
) -> dict[str, object]:
    status = manifest.column("status").to_numpy(zero_copy_only=False)
    reason = manifest.column("reason").to_numpy(zero_copy_only=False)
    signal = manifest.column("signal").to_numpy(zero_copy_only=False)
    return {
        "input_units": manifest.num_rows,
        "valid_samples": valid_samples,
        "status": _counts(status),
        "rejected_by_reason": _counts(reason[status == "rejected"]),
        "duplicates_by_signal": _counts(signal[status == "duplicate"]),
        "clusters": len(cluster_sizes),
        "clusters_with_duplicates": clusters_with_duplicates,
        "cluster_size_histogram": size_histogram(cluster_sizes),
        "largest_cluster": max(cluster_sizes, default=0),
        "policy": policy,
        "kept_samples": int((status == "kept").sum()),
        "shards_written": shards_written,
    }
