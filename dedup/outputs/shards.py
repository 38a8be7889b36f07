"""The cleaned corpus: one pass over the input that copies kept samples into new shards (and picks the
contact sheet's thumbnails on the way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from dedup.io.corpus import Corpus
from dedup.io.validate import decode_image
from dedup.io.writer import ShardWriter
from dedup.steps import valid_samples


def write_kept_shards(
    corpus: Corpus,
    units: pa.Table,
    *,
    kept: np.ndarray,
    weights: np.ndarray | None,
    out_dir: Path,
    shard_size: int,
    thumbnails_of: set[int],
) -> tuple[int, dict[int, np.ndarray]]:
    """Write the samples where ``kept`` (per valid sample) into ``out_dir/shards`` (none when
    ``shard_size`` is 0), with ``weights`` as their ``sampling_weight`` when given; decode the samples in
    ``thumbnails_of``. Returns (shards written, thumbnails)."""
    thumbs: dict[int, np.ndarray] = {}
    if not shard_size and not thumbnails_of:
        return 0, thumbs
    writer = ShardWriter(out_dir / "shards", shard_size) if shard_size else None
    try:
        for i, sample in valid_samples(corpus, units):
            if writer is not None and kept[i]:
                writer.write(sample, float(weights[i]) if weights is not None else None)
            if i in thumbnails_of:
                thumbs[i] = decode_image(sample.image, corpus.limits)
    except BaseException:
        if writer is not None:
            writer.abort()  # an interrupted shard is never committed under its final name
        raise
    if writer is not None:
        writer.close()
    return (len(writer.shards) if writer is not None else 0), thumbs
