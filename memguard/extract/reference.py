"""The audit's reference set: one image per duplicate cluster of the RAW corpus (its keeper), with the
cluster's size as the image's duplicate count, plus every raw copy in the cluster. A generation's distance
to an image is its distance to the closest copy (the model may have learned any of them), and Carlini's
normalizing neighbourhood counts each image once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from memguard.corpus.spec import Corpus
from memguard.dedup.pipeline import DedupResult
from memguard.diffusion.images import ImageSet, decode_items, load_image_set


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


def raw_image_set(corpus: Corpus, resolution: int, *, cache_dir: str | Path) -> ImageSet:
    """The raw corpus at ``resolution``: from the cached image set of its shards (the one the raw arm
    trains on), or decoded from an image folder (not cached: folders are small)."""
    if corpus.kind == "folder":
        return decode_items(corpus.items(), resolution, progress=False)
    return load_image_set(corpus.location, resolution, cache_dir)


def reference_set(
    dedup_result: DedupResult, resolution: int, *, cache_dir: str | Path, raw: ImageSet | None = None
) -> Reference:
    """One image per raw duplicate cluster (its keeper) with the cluster size as its duplicate count, and —
    from ``raw``, the corpus the dedup stage read — every copy in each cluster. The kept images come from
    the cached image set of the cleaned shards, so a rerun decodes nothing."""
    rows = pq.read_table(dedup_result.manifest, columns=["key", "status", "cluster_id", "cluster_size"]).to_pylist()
    size = {r["key"]: int(r["cluster_size"]) for r in rows if r["status"] == "kept"}
    cluster_of = {r["key"]: int(r["cluster_id"]) for r in rows if r["status"] in ("kept", "duplicate")}
    kept = load_image_set(str(dedup_result.shards), resolution, cache_dir)
    chosen = [i for i, key in enumerate(kept.keys) if key in size]
    keys = [kept.keys[i] for i in chosen]
    one_per_image = Reference(
        images=np.asarray(kept.images[chosen]),
        keys=keys,
        captions=[kept.captions[i] for i in chosen],
        dup_counts=np.asarray([size[key] for key in keys]),
        trained=np.ones(len(keys), bool),
    )
    if raw is None:
        return one_per_image
    image_of_cluster = {cluster_of[key]: i for i, key in enumerate(keys)}
    copies = [i for i, key in enumerate(raw.keys) if key in cluster_of]
    if len(copies) != len(cluster_of):
        # A silently smaller reference would undercount extraction: the corpus is not the one deduplicated.
        raise ValueError(
            f"the raw corpus yields {len(copies)} of the {len(cluster_of)} trained samples in "
            f"{dedup_result.manifest}: it is not the corpus that manifest describes"
        )
    copy_of = np.asarray([image_of_cluster[cluster_of[raw.keys[i]]] for i in copies], dtype=np.int64)
    return replace(one_per_image, copies=np.asarray(raw.images[copies]), copy_of=copy_of)
