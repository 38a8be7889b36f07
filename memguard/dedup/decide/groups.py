"""Group ids of equal values (the exact-duplicate groups of pixel hashes)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def sorted_group_ids(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """For each value, the rank of its value among the distinct values (``np.unique``'s inverse), sorted
    by Arrow without converting 10^6+ strings to a NumPy unicode array (160 bytes per 40-char hash). A
    null (no pixels: an embedding corpus) equals nothing: each null is a group of its own."""
    n = len(values)
    if not n:
        return np.zeros(0, np.int64)
    order = pc.sort_indices(values).to_numpy()  # nulls last
    ordered = values.take(pa.array(order))
    changes = pc.not_equal(ordered.slice(1), ordered.slice(0, n - 1)).fill_null(True).to_numpy(zero_copy_only=False)
    ranks = np.concatenate([[0], np.cumsum(changes)])
    ids = np.empty(n, np.int64)
    ids[order] = ranks
    return ids
