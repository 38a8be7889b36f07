"""The counts of ``stats.json`` (the pipeline adds timing, cache use, parameters and evaluation)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

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


def _counts(values: np.ndarray) -> Counter[str]:
    names, counts = np.unique(values.astype(str), return_counts=True)
    return Counter({str(k): int(v) for k, v in zip(names, counts, strict=True)})


@dataclass
class ManifestCounts:
    """What stats.json counts of manifest rows; the counts of consecutive ranges of rows add up."""

    units: int = 0
    status: Counter[str] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    duplicates_by_signal: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, manifest: pa.Table) -> ManifestCounts:
        status = manifest.column("status").to_numpy(zero_copy_only=False)
        reason = manifest.column("reason").to_numpy(zero_copy_only=False)
        signal = manifest.column("signal").to_numpy(zero_copy_only=False)
        return cls(manifest.num_rows, _counts(status), _counts(reason[status == "rejected"]),
                   _counts(signal[status == "duplicate"]))  # fmt: skip

    def __add__(self, other: ManifestCounts) -> ManifestCounts:
        return ManifestCounts(self.units + other.units, self.status + other.status,
                              self.rejected_by_reason + other.rejected_by_reason,
                              self.duplicates_by_signal + other.duplicates_by_signal)  # fmt: skip


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def build_stats(
    counts: ManifestCounts,
    *,
    valid_samples: int,
    cluster_sizes: list[int],
    clusters_with_duplicates: int,
    policy: str,
    shards_written: int,
) -> dict[str, object]:
    return {
        "input_units": counts.units,
        "valid_samples": valid_samples,
        "status": _sorted(counts.status),
        "rejected_by_reason": _sorted(counts.rejected_by_reason),
        "duplicates_by_signal": _sorted(counts.duplicates_by_signal),
        "clusters": len(cluster_sizes),
        "clusters_with_duplicates": clusters_with_duplicates,
        "cluster_size_histogram": size_histogram(cluster_sizes),
        "largest_cluster": max(cluster_sizes, default=0),
        "policy": policy,
        "kept_samples": counts.status["kept"],
        "shards_written": shards_written,
    }
