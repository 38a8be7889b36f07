"""The columns of a part's ``units.parquet``: one row per input unit, whatever the corpus kind."""

from __future__ import annotations

import pyarrow as pa

UNIT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("offset", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("caption", pa.string()),
        ("caption_norm", pa.string()),
        ("image_ext", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("pixel_hash", pa.string()),
        ("read_as_sample", pa.bool_()),  # the reader made a Sample of it (its key then counts for duplicate_key)
    ]
)
UNIT_COLUMNS = tuple(UNIT_SCHEMA.names)
