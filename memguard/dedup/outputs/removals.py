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


def removals_schema(id_column: str) -> pa.Schema:
    return pa.schema(
        [(id_column, pa.string()), ("duplicate_of", pa.string()), ("cluster_id", pa.int64()), ("signal", pa.string())]
    )


def build_removals(manifest: pa.Table, *, id_column: str) -> pa.Table:
    removed = manifest.filter(pc.equal(manifest.column("status"), "duplicate"))
    columns = [removed.column(name) for name in ("key", "duplicate_of", "cluster_id", "signal")]
    return pa.Table.from_arrays(columns, schema=removals_schema(id_column))
