"""Digests of a main-job run's outputs that must not change when the code is only reorganised: the dedup
outputs (manifest, clusters, cleaned shards, contact sheet), each arm's audit (metrics, matches, images),
its generations, its trained model's weights, and metrics.json without wall-time fields.

    python bench/main_job_digest.py runs/dedup/<timestamp>                     # print the digests
    python bench/main_job_digest.py runs/dedup/<timestamp> --record FILE.json  # write them
    python bench/main_job_digest.py runs/dedup/<timestamp> --check FILE.json   # exit 1 on a difference

Figures that depend on the clock (seconds, throughput, peak memory, step timings) are left out, and the
manifest's ``source`` column (each unit's shard path) counts by its path inside the cache, so two checkouts
in different folders compare equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TIMING_KEYS = {"seconds", "stages", "peak_rss_mb", "train_seconds", "images_per_second"}
PATTERNS = (
    "dedup/manifest.parquet",
    "dedup/clusters.parquet",
    "dedup/contact_sheet.png",
    "dedup/shards/*.tar",
    "arms/*/extract/matches.parquet",
    "arms/*/extract/metrics.json",
    "arms/*/extract/*.png",
    "arms/*/extract/generations/*",
    "arms/*/train/samples.png",
    "arms/*/train/model/**/*.safetensors",
)


def _without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _manifest_digest(path: Path) -> str:
    table = pq.read_table(path)
    inside_cache = [s.partition("/.cache/")[2] or s for s in table.column("source").to_pylist()]
    table = table.set_column(table.schema.get_field_index("source"), "source", pa.array(inside_cache))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


def digests(run: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for pattern in PATTERNS:
        for path in sorted(run.glob(pattern)):
            if path.name == "manifest.parquet":
                found[str(path.relative_to(run))] = _manifest_digest(path)
            elif path.is_file():
                found[str(path.relative_to(run))] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    metrics = _without_timing(json.loads((run / "metrics.json").read_text()))
    found["metrics.json (no timing)"] = hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest()[:16]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--record", type=Path)
    group.add_argument("--check", type=Path)
    args = parser.parse_args()
    found = digests(args.run)
    if args.record:
        args.record.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    if args.check:
        recorded = json.loads(args.check.read_text())
        differ = sorted(k for k in recorded.keys() | found.keys() if recorded.get(k) != found.get(k))
        for name in differ:
            print(f"differs: {name}: recorded {recorded.get(name)}, now {found.get(name)}")
        print(f"{len(found) - len(differ)} of {len(recorded)} recorded digests equal")
        return 1 if differ else 0
    if not (args.record or args.check):
        print(json.dumps(found, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
