"""``removals.parquet``: the ids of the samples the policy removes, keyed by the corpus's own id column,
so a curator filters the tables they already have without reading our manifest's other columns:

    removed = pq.read_table("out/removals.parquet").column("url")
    kept = metadata.filter(pc.invert(pc.is_in(metadata.column("url"), removed)))   # pyarrow
    dataset = dataset.filter(lambda row: row["url"] not in removed_set)            # datasets

Columns: the id column (``key`` for image corpora, the embedding corpus's id column otherwise), then
``duplicate_of`` (the id of the kept sample it duplicates), ``cluster_id`` and ``signal``. Only removed
samples are listed (status ``duplicate``); rejected units are in the manifest with their reason.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

REMOVALS_FILE = "removals.parquet"


def build_removals(manifest: pa.Table, *, id_column: str) -> pa.Table:
    removed = manifest.filter(pc.equal(manifest.column("status"), "duplicate"))
    return pa.table(
        {
            id_column: removed.column("key"),
            "duplicate_of": removed.column("duplicate_of"),
            "cluster_id": removed.column("cluster_id"),
            "signal": removed.column("signal"),
        }
    )
