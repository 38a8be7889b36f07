"""One arm's row of metrics.json (docs/METRICS.md): ``ArmMetrics``, built from the arm's training result
and audit by ``arm_metrics``, written by ``ArmMetrics.row``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memguard.dedup.pipeline import DedupResult
from memguard.train.result import TrainResult


@dataclass(frozen=True, kw_only=True)
class ArmMetrics:
    corpus: str
    mitigations: list[str]
    training_samples: int
    extracted_images: int
    extracted_duplicated_images: int
    extraction_by_duplicate_count: dict[str, Any]
    extracted_images_by_delta: dict[str, Any]
    mia_auc: float
    mia_tpr_at_1pct_fpr: float
    mia_best_timestep: int
    heldout_loss: float
    copy_similarity: Any
    train_seconds: float
    images_per_second: float
    attack: Any
    # Present only where the audit or the training measured them (unconditional audits; Wen's filter).
    optional: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The arm's row of metrics.json, the optional fields only where measured."""
        fields = {name: getattr(self, name) for name in REQUIRED}
        return {**fields, **self.optional}


REQUIRED = tuple(name for name in ArmMetrics.__dataclass_fields__ if name != "optional")
OPTIONAL_AUDIT = ("extracted_featureless_images", "featureless_keys", "nearest_l2")


def arm_metrics(
    train: TrainResult, audit: dict[str, Any], *, corpus: str, mitigations: list[str], training_samples: int
) -> ArmMetrics:
    """The arm's metrics from its training result and its audit's metrics.json."""
    membership = audit["membership"]
    optional = {k: audit[k] for k in OPTIONAL_AUDIT if k in audit}
    if train.wen_dropped_share is not None:
        optional["wen_dropped_share"] = train.wen_dropped_share
    return ArmMetrics(
        corpus=corpus,
        mitigations=mitigations,
        training_samples=training_samples,
        extracted_images=audit["extracted_images"],
        extracted_duplicated_images=audit["extracted_duplicated_images"],
        extraction_by_duplicate_count=audit["by_duplicate_count"],
        extracted_images_by_delta=audit.get("extracted_images_by_delta", {}),
        mia_auc=membership["auc"],
        mia_tpr_at_1pct_fpr=membership["tpr_at_1pct_fpr"],
        mia_best_timestep=membership["best_timestep"],
        heldout_loss=membership["heldout_loss"],
        copy_similarity=audit["copy_similarity"],
        train_seconds=train.seconds,
        images_per_second=train.images_per_second,
        attack=audit["attack"],
        optional=optional,
    )


def training_samples(results: dict[str, DedupResult], corpus: str) -> int:
    """The samples an arm's corpus holds, as its dedup run counted them: every valid sample for ``raw``,
    the written (kept) samples for ``dedup`` and ``reweight``. A product of the cached dedup result, so
    counting opens no shard."""
    if corpus == "raw":
        return int(results["dedup"].stats["valid_samples"])  # type: ignore[call-overload]
    return int(results[corpus].stats["kept_samples"])  # type: ignore[call-overload]
