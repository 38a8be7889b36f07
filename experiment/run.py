"""The main job: dedup → train each arm → extract → report, with every expensive stage cached.

Arms (experiment/arms.py): ``raw`` (the corpus as given), ``dedup`` (the cleaned corpus), ``reweight`` (all
samples, weight 1/|cluster|), each optionally with training-time mitigations (``raw+rt``, ``dedup+best``, ...).
All arms share the seed, the model, the budget and the audit, so their metrics differ only by what the arm
changes; arms that train the same thing share one cached model.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from common.atomic import write_json
from common.cache import COMPLETE, Cache, entry_key
from common.progress import progress_scope
from common.timing import StepTimer, peak_rss_mb
from dedup.executor import ExecutorConfig
from dedup.io.corpus import Corpus
from dedup.io.readers import read_shards
from dedup.io.sample import Sample
from dedup.pipeline import DedupParams, DedupResult, run_dedup
from dedup.signals.embed import EmbedderParams
from diffusion.images import ImageSet, load_image_set
from diffusion.models import ModelConfig, build_model
from diffusion.saved import load_model
from experiment.arms import Arm, best_kind, mitigation_of, parse_arms
from extract.audit import audit
from extract.config import AuditConfig
from extract.reference import Reference, reference_set
from train.config import TrainConfig
from train.loop import train_model
from train.mitigations import MitigationConfig
from train.source import open_training_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    arms: tuple[str, ...]
    dedup: DedupParams
    model: ModelConfig
    train: TrainConfig
    audit: AuditConfig
    mitigation: MitigationConfig = field(default_factory=MitigationConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def __post_init__(self) -> None:
        parse_arms(self.arms)  # a clear error for a misspelt arm before any work

    @property
    def parsed_arms(self) -> tuple[Arm, ...]:
        return parse_arms(self.arms)


def _train_arm(
    shards: str, spec: ExperimentSpec, mitigation: MitigationConfig, cache: Cache, state: PartialState
) -> tuple[Path, dict[str, Any], bool]:
    """Train (or reuse) one arm; the cache key is everything that determines the weights. A killed
    training resumes from the checkpoints in the entry's partial folder."""
    data, content = open_training_data(shards, resolution=spec.model.resolution, cfg=spec.train, cache_dir=cache.root)
    key = entry_key("train", *content, asdict(spec.model), asdict(spec.train), asdict(mitigation))
    hits = len(cache.hits)

    def train(work: Path) -> None:
        train_model(
            build_model(spec.model, seed=spec.train.seed), data, spec.train, out_dir=work, mitigation=mitigation
        )

    if state.num_processes == 1:
        folder = cache.get("train", key, train, resumable=True)
    else:  # all processes train together into one partial folder; the main process commits it
        folder = cache.path("train", key)
        if not (folder / COMPLETE).exists():
            train(cache.work_folder("train", key, resumable=True))
            state.wait_for_everyone()
            if state.is_main_process:
                cache.commit("train", key)
            state.wait_for_everyone()
    result = json.loads((folder / "train_result.json").read_text())
    return folder, {**result, "model_dir": str(folder / "model")}, len(cache.hits) > hits


def _audit_arm(
    model_dir: Path,
    reference: Reference,
    heldout: ImageSet | None,
    heldout_images: np.ndarray,
    cfg: AuditConfig,
    embedder: EmbedderParams,
    work: Path,
) -> None:
    audit(
        load_model(model_dir),
        reference,
        heldout=heldout_images,
        heldout_captions=heldout.captions if heldout is not None else None,
        cfg=cfg,
        out_dir=work,
        embedder=embedder,
    )


def _heldout(corpus: Corpus, resolution: int, data_cache: Path) -> ImageSet | None:
    if not corpus.heldout:
        return None
    return load_image_set(corpus.heldout, resolution, data_cache)


def run_experiment(
    spec: ExperimentSpec, corpus: Corpus, *, out_dir: str | Path, cache_dir: str | Path
) -> dict[str, Any]:
    """Dedup the corpus, train every arm of ``spec`` with the same seed and budget, audit each against the
    raw corpus's reference set, and write ``metrics.json`` (docs/METRICS.md) under ``out_dir``. Every stage
    is cached under ``cache_dir``: a second call with the same inputs trains and audits nothing."""
    out = Path(out_dir)
    cache = Cache(Path(cache_dir))
    timer = StepTimer()
    started = time.perf_counter()
    # Under `accelerate launch` every process runs this function: the main process fills the caches first,
    # the others then read them; all processes train together; only the main process audits and reports.
    # cpu=True without CUDA: several processes on a CPU machine (torchrun) then share one gloo group.
    state = PartialState(cpu=not torch.cuda.is_available())
    with timer.step("dedup") as rec, state.main_process_first():
        cleaned = run_dedup(
            corpus,
            replace(spec.dedup, policy="remove"),
            out_dir=out / "dedup",
            cache=cache,
            executor=spec.executor,
        )
        rec["cached"] = not cache.misses
    shards = {"raw": corpus.location, "dedup": cleaned.shards}
    if any(arm.corpus == "reweight" for arm in spec.parsed_arms):
        with timer.step("dedup_reweight"):
            reweighted = replace(spec.dedup, policy="reweight")
            shards["reweight"] = run_dedup(
                corpus, reweighted, out_dir=out / "dedup_reweight", cache=cache, executor=spec.executor
            ).shards
    reference = reference_set(cleaned, spec.model.resolution, corpus.items())
    heldout = _heldout(corpus, spec.model.resolution, cache.root)
    heldout_images = np.asarray(heldout.images) if heldout is not None else reference.images[:0]
    arms: dict[str, Any] = {}
    for parsed in spec.parsed_arms:
        arm = parsed.name
        chosen = _best_kind(spec, arms, state) if parsed.best else None
        mitigation = mitigation_of(parsed, spec.mitigation, chosen)
        with timer.step(f"train_{arm}") as rec, progress_scope(arm):  # bars read "raw: train"
            folder, result, cached = _train_arm(str(shards[parsed.corpus]), spec, mitigation, cache, state)
            rec["cached"] = cached
        if not state.is_main_process:
            continue
        arm_dir = out / "arms" / arm
        (arm_dir / "train").mkdir(parents=True, exist_ok=True)
        write_json(arm_dir / "train" / "train_result.json", result)
        samples = sorted((folder / "samples").glob("*.png"))
        if samples:
            shutil.copyfile(samples[-1], arm_dir / "train" / "samples.png")
        # The trained model (a diffusers folder) and its training logs live in the cache; the run links them.
        for name, target in (("model", folder / "model"), ("logs", folder / "train")):
            _link(arm_dir / "train" / name, target)
        with timer.step(f"extract_{arm}") as rec, progress_scope(arm):
            audit_key = entry_key(
                "audit",
                str(folder),
                asdict(spec.audit),
                asdict(spec.dedup.embedder),
                reference.keys,
                reference.dup_counts.tolist(),
                reference.training_copies()[1].tolist(),
                len(heldout_images),
            )
            hits = len(cache.hits)
            audit_cache = cache.get(
                "audit",
                audit_key,
                partial(
                    _audit_arm, folder / "model", reference, heldout, heldout_images, spec.audit, spec.dedup.embedder
                ),
                resumable=True,
            )
            rec["cached"] = len(cache.hits) > hits
            shutil.copytree(audit_cache, arm_dir / "extract", dirs_exist_ok=True)
        arms[arm] = {
            "train": result,
            "extract": json.loads((arm_dir / "extract" / "metrics.json").read_text()),
            "training_samples": _count(shards[parsed.corpus]),
            "corpus": parsed.corpus,
            "mitigations": list(mitigation.kinds),
        }
    state.wait_for_everyone()
    metrics = _metrics(spec, cleaned, arms, timer, time.perf_counter() - started) if state.is_main_process else {}
    if state.is_main_process:
        write_json(out / "metrics.json", metrics)
    return metrics


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    if target.exists():
        link.symlink_to(target.resolve(), target_is_directory=True)


def _count(shards: str | None) -> int:
    return sum(1 for item in read_shards(shards) if isinstance(item, Sample)) if shards else 0


def _best_kind(spec: ExperimentSpec, arms: dict[str, Any], state: PartialState) -> str:
    """The mitigation a ``+best`` arm takes: chosen on the main process (which alone audits), then sent
    to the others, which train the arm with it."""
    box = [best_kind(spec.parsed_arms, {a: _metric_row(d) for a, d in arms.items()}) if state.is_main_process else ""]
    if state.num_processes > 1:
        broadcast_object_list(box)
    return str(box[0])


def _metric_row(data: dict[str, Any]) -> dict[str, Any]:
    """One arm's row of metrics.json from its training result and audit."""
    ex = data["extract"]
    return {
        "corpus": data["corpus"],
        "mitigations": data["mitigations"],
        "training_samples": data["training_samples"],
        "extracted_images": ex["extracted_images"],
        "extracted_duplicated_images": ex["extracted_duplicated_images"],
        "extraction_by_duplicate_count": ex["by_duplicate_count"],
        "extracted_images_by_delta": ex.get("extracted_images_by_delta", {}),
        **{k: ex[k] for k in ("extracted_featureless_images", "featureless_keys") if k in ex},
        **({"nearest_l2": ex["nearest_l2"]} if "nearest_l2" in ex else {}),
        "mia_auc": ex["membership"]["auc"],
        "mia_tpr_at_1pct_fpr": ex["membership"]["tpr_at_1pct_fpr"],
        "mia_best_timestep": ex["membership"]["best_timestep"],
        "heldout_loss": ex["membership"]["heldout_loss"],
        "copy_similarity": ex["copy_similarity"],
        "train_seconds": data["train"]["seconds"],
        "images_per_second": data["train"]["images_per_second"],
        **(
            {"wen_dropped_share": data["train"]["wen_dropped_share"]}
            if data["train"].get("wen_dropped_share") is not None
            else {}
        ),
        "attack": ex["attack"],
    }


def _metrics(
    spec: ExperimentSpec, cleaned: DedupResult, arms: dict[str, Any], timer: StepTimer, seconds: float
) -> dict[str, Any]:
    """The fixed schema every run writes (docs/METRICS.md), which ``experiment.compare`` reads."""
    stats = cleaned.stats
    evaluation: dict[str, Any] = stats.get("evaluation", {})  # type: ignore[assignment]
    per_arm = {arm: _metric_row(data) for arm, data in arms.items()}
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
