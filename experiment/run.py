"""The main job: dedup → train each arm → extract → report, with every expensive stage cached.

Arms: ``raw`` (the corpus as given), ``dedup`` (the cleaned corpus), ``reweight`` (all samples, weight
1/|cluster|), ``mitigated`` (the cleaned corpus plus a training-time mitigation). All arms share the seed,
the model, the budget and the audit, so their metrics differ only by what the arm changes.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import PartialState

from common.atomic import write_json
from common.cache import StepCache, fingerprint
from common.timing import StepTimer, peak_rss_mb
from dedup.io.corpus import Corpus
from dedup.io.readers import read_shards
from dedup.io.sample import Sample
from dedup.pipeline import DedupParams, DedupResult, run_dedup
from diffusion.images import ImageSet, load_image_set
from diffusion.models import ModelConfig, build_model, load_model
from extract.audit import AuditConfig, audit
from extract.reference import reference_set
from train.loop import TrainConfig, train_model
from train.mitigations import MitigationConfig

log = logging.getLogger(__name__)
ARMS = ("raw", "dedup", "reweight", "mitigated")
EXPERIMENT_VERSION = 2  # bump when training or audit code changes what a cached stage would contain


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    arms: tuple[str, ...]
    dedup: DedupParams
    model: ModelConfig
    train: TrainConfig
    audit: AuditConfig
    mitigation: MitigationConfig = field(default_factory=MitigationConfig)

    def __post_init__(self) -> None:
        unknown = set(self.arms) - set(ARMS)
        if unknown or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {self.arms}")


def _dedup(corpus: Corpus, params: DedupParams, out: Path, cache: StepCache) -> DedupResult:
    return run_dedup(corpus, params, out, cache)


def _train_arm(
    shards: Path, spec: ExperimentSpec, mitigation: MitigationConfig, cache_root: Path, data_cache: Path
) -> tuple[Path, dict[str, Any], bool]:
    """Train (or reuse) one arm; the cache key is everything that determines the weights."""
    data = load_image_set(str(shards), spec.model.resolution, data_cache)
    key = fingerprint(
        "train",
        EXPERIMENT_VERSION,
        data.keys,
        data.captions,
        data.weights.tolist(),
        asdict(spec.model),
        asdict(spec.train),
        asdict(mitigation),
    )
    folder = cache_root / "train" / key
    if (folder / "train_result.json").exists() and (folder / "model").exists():
        log.info("reusing trained model %s", folder)
        return folder, json.loads((folder / "train_result.json").read_text()), True
    model = build_model(spec.model, seed=spec.train.seed)
    train_model(model, data, spec.train, folder, mitigation)
    return folder, json.loads((folder / "train_result.json").read_text()), False


def _heldout(corpus: Corpus, resolution: int, data_cache: Path) -> ImageSet | None:
    if not corpus.heldout:
        return None
    return load_image_set(corpus.heldout, resolution, data_cache)


def run_experiment(spec: ExperimentSpec, corpus: Corpus, out_dir: str | Path, cache_dir: str | Path) -> dict[str, Any]:
    out = Path(out_dir)
    cache_root = Path(cache_dir)
    steps_cache = StepCache(cache_root / "steps")
    timer = StepTimer()
    started = time.perf_counter()
    # Under `accelerate launch` every process runs this function: the main process fills the caches first,
    # the others then read them; all processes train together; only the main process audits and reports.
    state = PartialState()
    with timer.step("dedup") as rec, state.main_process_first():
        cleaned = _dedup(corpus, replace(spec.dedup, policy="remove"), out / "dedup", steps_cache)
        rec["cached"] = not steps_cache.misses
    shards = {"raw": Path(corpus.location), "dedup": cleaned.shards, "mitigated": cleaned.shards}
    if "reweight" in spec.arms:
        with timer.step("dedup_reweight"):
            shards["reweight"] = _dedup(
                corpus, replace(spec.dedup, policy="reweight"), out / "dedup_reweight", steps_cache
            ).shards
    reference = reference_set(cleaned, spec.model.resolution, corpus.items())
    heldout = _heldout(corpus, spec.model.resolution, cache_root)
    heldout_images = np.asarray(heldout.images) if heldout is not None else reference.images[:0]
    arms: dict[str, Any] = {}
    for arm in spec.arms:
        mitigation = spec.mitigation if arm == "mitigated" else MitigationConfig()
        with timer.step(f"train_{arm}") as rec:
            folder, result, cached = _train_arm(Path(str(shards[arm])), spec, mitigation, cache_root, cache_root)
            rec["cached"] = cached
        if not state.is_main_process:
            continue
        arm_dir = out / "arms" / arm
        (arm_dir / "train").mkdir(parents=True, exist_ok=True)
        write_json(arm_dir / "train" / "train_result.json", {**result, "model_dir": str(folder / "model")})
        samples = sorted((folder / "samples").glob("*.png"))
        if samples:
            shutil.copyfile(samples[-1], arm_dir / "train" / "samples.png")
        with timer.step(f"extract_{arm}") as rec:
            audit_key = fingerprint(
                "audit",
                EXPERIMENT_VERSION,
                str(folder),
                asdict(spec.audit),
                reference.keys,
                reference.dup_counts.tolist(),
                reference.training_copies()[1].tolist(),
                len(heldout_images),
            )
            audit_cache = cache_root / "audit" / audit_key
            if (audit_cache / "metrics.json").exists():
                rec["cached"] = True
            else:
                model = load_model(folder / "model")
                audit(
                    model,
                    reference,
                    heldout_images,
                    heldout.captions if heldout is not None else None,
                    spec.audit,
                    audit_cache,
                )
            shutil.copytree(audit_cache, arm_dir / "extract", dirs_exist_ok=True)
        arms[arm] = {
            "train": result,
            "extract": json.loads((arm_dir / "extract" / "metrics.json").read_text()),
            "training_samples": _count(shards[arm]),
        }
    state.wait_for_everyone()
    metrics = _metrics(spec, cleaned, arms, timer, time.perf_counter() - started) if state.is_main_process else {}
    if state.is_main_process:
        write_json(out / "metrics.json", metrics)
    return metrics


def _count(shards: Path | None) -> int:
    return sum(1 for item in read_shards(str(shards)) if isinstance(item, Sample)) if shards else 0


def _metrics(
    spec: ExperimentSpec, cleaned: DedupResult, arms: dict[str, Any], timer: StepTimer, seconds: float
) -> dict[str, Any]:
    """The fixed schema every run writes (docs/METRICS.md), which ``train.compare`` reads."""
    stats = cleaned.stats
    evaluation: dict[str, Any] = stats.get("evaluation", {})  # type: ignore[assignment]
    per_arm = {}
    for arm, data in arms.items():
        ex = data["extract"]
        per_arm[arm] = {
            "training_samples": data["training_samples"],
            "extracted_images": ex["extracted_images"],
            "extracted_duplicated_images": ex["extracted_duplicated_images"],
            "extraction_by_duplicate_count": ex["by_duplicate_count"],
            "mia_auc": ex["membership"]["auc"],
            "mia_tpr_at_1pct_fpr": ex["membership"]["tpr_at_1pct_fpr"],
            "mia_best_timestep": ex["membership"]["best_timestep"],
            "heldout_loss": ex["membership"]["heldout_loss"],
            "copy_similarity": ex["copy_similarity"],
            "train_seconds": data["train"]["seconds"],
            "images_per_second": data["train"]["images_per_second"],
            "attack": ex["attack"],
        }
    reduction = None
    if "raw" in per_arm and "dedup" in per_arm:
        raw, dd = per_arm["raw"]["extracted_images"], per_arm["dedup"]["extracted_images"]
        reduction = {
            "raw": raw,
            "dedup": dd,
            "factor": round(raw / dd, 2) if dd else None,
            "heldout_loss_ratio": round(per_arm["dedup"]["heldout_loss"] / per_arm["raw"]["heldout_loss"], 4),
        }
    return {
        "schema": 1,
        "experiment": spec.name,
        "seed": spec.train.seed,
        "dedup": {
            "input_units": stats["input_units"],
            "status": stats["status"],
            "clusters_with_duplicates": stats["clusters_with_duplicates"],
            "largest_cluster": stats["largest_cluster"],
            "cluster_size_histogram": stats["cluster_size_histogram"],
            "precision": evaluation.get("injected", {}).get("precision"),
            "recall": evaluation.get("injected", {}).get("recall"),
        },
        "arms": per_arm,
        "reduction": reduction,
        "stages": timer.steps,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "config": {
            "model": asdict(spec.model),
            "train": asdict(spec.train),
            "audit": asdict(spec.audit),
            "mitigation": asdict(spec.mitigation),
            "arms": list(spec.arms),
        },
    }
