"""What every audit of one corpus shares: the raw corpus's reference set and the held-out images, both
from cached image sets (a rerun reads no shard). The main job and ``python -m extract`` build them here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memguard.corpus.spec import Corpus
from memguard.dedup.pipeline import DedupResult
from memguard.diffusion.images import ImageSet, load_image_set
from memguard.extract.reference import Reference, raw_image_set, reference_set


@dataclass(frozen=True, kw_only=True)
class AuditInputs:
    """What every arm's audit shares: the raw corpus's reference set and the held-out images."""

    reference: Reference
    heldout: ImageSet | None
    heldout_images: np.ndarray

    def key_parts(self) -> list[object]:
        reference = self.reference
        return [reference.keys, reference.dup_counts.tolist(), reference.training_copies()[1].tolist(),
                len(self.heldout_images)]  # fmt: skip


def audit_inputs(corpus: Corpus, cleaned: DedupResult, *, resolution: int, cache_dir: str | Path) -> AuditInputs:
    """The reference set of ``cleaned`` (one image per raw cluster, every raw copy) and the held-out images."""
    raw = raw_image_set(corpus, resolution, cache_dir=cache_dir)
    reference = reference_set(cleaned, resolution, cache_dir=cache_dir, raw=raw)
    heldout = load_image_set(corpus.heldout, resolution, cache_dir) if corpus.heldout else None
    heldout_images = np.asarray(heldout.images) if heldout is not None else reference.images[:0]
    return AuditInputs(reference=reference, heldout=heldout, heldout_images=heldout_images)
