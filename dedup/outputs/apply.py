"""Step 7, ``apply``: the policy turns clusters into one manifest row per input unit, cleaned shards,
clusters.parquet, stats.json and a contact sheet."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from common.atomic import write_table
from dedup.outputs.contact_sheet import contact_sheet
from dedup.io.corpus import Corpus
from dedup.ingest import valid_samples
from dedup.io.sample import Reason
from dedup.io.validate import decode_image
from dedup.io.writer import ShardWriter

MANIFEST_COLUMNS = (
    "key",
    "source",
    "offset",
    "status",
    "reason",
    "detail",
    "cluster_id",
    "cluster_size",
    "duplicate_of",
    "signal",
    "caption_jaccard",
    "image_sim",
    "weight",
)


@dataclass(frozen=True)
class Decision:
    """Per valid sample: cluster label, keeper index, cluster size, matching signal, finite embedding."""

    labels: np.ndarray
    keeper: np.ndarray
    size: np.ndarray
    signal: np.ndarray
    finite: np.ndarray


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


def write_outputs(
    corpus: Corpus,
    units: pa.Table,
    valid_rows: np.ndarray,
    decision: Decision,
    signatures: np.ndarray,
    usable: np.ndarray,
    embeddings: np.ndarray,
    policy: str,
    out_dir: Path,
    shard_size: int,
    sheet_clusters: int,
) -> dict[str, object]:
    n = len(valid_rows)
    col = {name: units.column(name).to_pylist() for name in ("key", "source", "offset", "status", "reason", "detail")}
    keys = [col["key"][int(r)] for r in valid_rows]
    me = np.arange(n)
    kp = decision.keeper
    image_sim = np.einsum("ij,ij->i", embeddings, embeddings[kp]) if n else np.zeros(0)
    jaccard = (signatures == signatures[kp]).mean(axis=1) if n else np.zeros(0)
    jaccard = np.where(usable & usable[kp], jaccard, np.nan)
    is_dup = (kp != me) & decision.finite

    rows: dict[str, list[object]] = {c: [] for c in MANIFEST_COLUMNS}
    position = {int(r): i for i, r in enumerate(valid_rows)}
    for unit in range(units.num_rows):
        i = position.get(unit)
        base = {"key": col["key"][unit], "source": col["source"][unit], "offset": col["offset"][unit]}
        if i is None or not decision.finite[i]:
            reason = col["reason"][unit] if i is None else str(Reason.NON_FINITE_EMBEDDING)
            row = {
                **base,
                "status": "rejected",
                "reason": reason,
                "detail": col["detail"][unit] if i is None else "",
                "cluster_id": -1,
                "cluster_size": 0,
                "duplicate_of": "",
                "signal": "",
                "caption_jaccard": float("nan"),
                "image_sim": float("nan"),
                "weight": 0.0,
            }
        else:
            dup = bool(is_dup[i])
            size = int(decision.size[i])
            if policy == "reweight":
                status, weight = "kept", 1.0 / size
            elif policy == "keep":
                status, weight = "kept", 1.0
            else:
                status, weight = ("duplicate", 0.0) if dup else ("kept", 1.0)
            row = {
                **base,
                "status": status,
                "reason": "",
                "detail": "",
                "cluster_id": int(decision.labels[i]),
                "cluster_size": size,
                "duplicate_of": keys[kp[i]] if dup else "",
                "signal": str(decision.signal[i]) if size > 1 else "",
                "caption_jaccard": float(jaccard[i]) if size > 1 else float("nan"),
                "image_sim": float(image_sim[i]) if size > 1 else float("nan"),
                "weight": weight,
            }
        for c in MANIFEST_COLUMNS:
            rows[c].append(row[c])
    manifest = pa.table(rows)

    # Clusters of two or more, largest first, for clusters.parquet and the contact sheet.
    members: dict[int, list[int]] = {}
    for i in range(n):
        if decision.finite[i] and decision.size[i] > 1:
            members.setdefault(int(decision.labels[i]), []).append(i)
    ranked = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    write_table(
        out_dir / "clusters.parquet",
        pa.table(
            {
                "cluster_id": [c for c, _ in ranked],
                "size": [len(m) for _, m in ranked],
                "keeper": [keys[int(kp[m[0]])] for _, m in ranked],
                "members": [[keys[i] for i in m] for _, m in ranked],
                "signals": [sorted({str(decision.signal[i]) for i in m} - {"", "keeper"}) for _, m in ranked],
            },
            schema=pa.schema(
                [
                    ("cluster_id", pa.int64()),
                    ("size", pa.int64()),
                    ("keeper", pa.string()),
                    ("members", pa.list_(pa.string())),
                    ("signals", pa.list_(pa.string())),
                ]
            ),
        ),
    )

    sheet_members = {i for _, m in ranked[:sheet_clusters] for i in m[:12]}
    thumbs: dict[int, np.ndarray] = {}
    shards_written = 0
    decision_weights = 1.0 / decision.size
    kept_status = np.array([rows["status"][int(r)] == "kept" for r in valid_rows], dtype=bool)
    if shard_size or sheet_members:
        writer = ShardWriter(out_dir / "shards", shard_size) if shard_size else None
        try:
            for i, sample in valid_samples(corpus, units):
                if writer is not None and kept_status[i]:
                    sample_weight = float(decision_weights[i]) if policy == "reweight" else None
                    writer.write(sample, sample_weight)
                if i in sheet_members:
                    thumbs[i] = decode_image(sample.image, corpus.limits)
        finally:
            if writer is not None:
                writer.close()
                shards_written = len(writer.shards)
    sheet_rows = [
        [(thumbs[i], bool(kp[i] == i)) for i in sorted(m[:12], key=lambda i: kp[i] != i)]
        for _, m in ranked[:sheet_clusters]
    ]
    contact_sheet(sheet_rows, out_dir / "contact_sheet.png")
    write_table(out_dir / "manifest.parquet", manifest)

    status_counts = Counter(rows["status"])
    cluster_sizes = [int(decision.size[i]) for i in range(n) if decision.finite[i] and kp[i] == i]
    return {
        "input_units": units.num_rows,
        "valid_samples": n,
        "status": dict(status_counts),
        "rejected_by_reason": dict(
            Counter(r for r, s in zip(rows["reason"], rows["status"], strict=True) if s == "rejected")
        ),
        "duplicates_by_signal": dict(
            Counter(s for s, st in zip(rows["signal"], rows["status"], strict=True) if st == "duplicate")
        ),
        "clusters": len(cluster_sizes),
        "clusters_with_duplicates": len(ranked),
        "cluster_size_histogram": size_histogram(cluster_sizes),
        "largest_cluster": max(cluster_sizes, default=0),
        "policy": policy,
        "kept_samples": int(kept_status.sum()),
        "shards_written": shards_written,
    }
