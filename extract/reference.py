"""The audit's reference set: one image per duplicate cluster of the RAW corpus (its keeper), with the
cluster's size as the image's duplicate count, plus every raw copy in the cluster. A generation's distance
to an image is its distance to the closest copy (the model may have learned any of them), and Carlini's
normalizing neighbourhood counts each image once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import pyarrow.parquet as pq

from dedup.io.readers import Item, read_shards
from dedup.io.sample import Sample
from dedup.io.validate import decode_image
from dedup.pipeline import DedupResult
from diffusion.images import square_resize


@dataclass(frozen=True, kw_only=True)
class Reference:
    images: np.ndarray  # (N, H, W, 3) uint8, one per raw duplicate cluster
    keys: list[str]
    captions: list[str]
    dup_counts: np.ndarray  # size of the image's cluster in the raw corpus
    trained: np.ndarray  # bool: the audited model saw this image
    copies: np.ndarray | None = None  # every raw training image: keepers and their near-copies
    copy_of: np.ndarray | None = None  # per copy, the index of its image in ``images``

    def training_copies(self) -> tuple[np.ndarray, np.ndarray]:
        """(copies, index of each copy's image); without copies, the images themselves."""
        if self.copies is None or self.copy_of is None:
            return self.images, np.arange(len(self.images))
        return self.copies, self.copy_of

    def copies_of(self, index: int) -> np.ndarray:
        copies, copy_of = self.training_copies()
        return copies[copy_of == index]


def reference_set(dedup_result: DedupResult, resolution: int, raw_items: Iterable[Item] | None = None) -> Reference:
    """One image per raw duplicate cluster (its keeper) with the cluster size as its duplicate count, and —
    from ``raw_items``, the corpus the dedup stage read — every copy in each cluster."""
    rows = pq.read_table(dedup_result.manifest, columns=["key", "status", "cluster_id", "cluster_size"]).to_pylist()
    size = {r["key"]: int(r["cluster_size"]) for r in rows if r["status"] == "kept"}
    cluster_of = {r["key"]: int(r["cluster_id"]) for r in rows if r["status"] in ("kept", "duplicate")}
    images, keys, captions, counts = [], [], [], []
    for item in read_shards(str(dedup_result.shards)):
        if isinstance(item, Sample) and item.key in size:
            images.append(square_resize(decode_image(item.image), resolution))
            keys.append(item.key)
            captions.append(item.caption)
            counts.append(size[item.key])
    one_per_image = Reference(
        images=np.stack(images),
        keys=keys,
        captions=captions,
        dup_counts=np.asarray(counts),
        trained=np.ones(len(keys), bool),
    )
    if raw_items is None:
        return one_per_image
    image_of_cluster = {cluster_of[key]: i for i, key in enumerate(keys)}
    copies, copy_of = [], []
    for item in raw_items:
        if isinstance(item, Sample) and item.key in cluster_of:
            copies.append(square_resize(decode_image(item.image), resolution))
            copy_of.append(image_of_cluster[cluster_of[item.key]])
    if len(copies) != len(cluster_of):
        # A silently smaller reference would undercount extraction: the corpus is not the one deduplicated.
        raise ValueError(
            f"the raw corpus yields {len(copies)} of the {len(cluster_of)} trained samples in "
            f"{dedup_result.manifest}: it is not the corpus that manifest describes"
        )
    return replace(one_per_image, copies=np.stack(copies), copy_of=np.asarray(copy_of, dtype=np.int64))
