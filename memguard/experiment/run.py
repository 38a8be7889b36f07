"""The main job: dedup → train each arm → extract → report, with every expensive stage cached.

Arms (memguard/experiment/arms.py): ``raw`` (the corpus as given), ``dedup`` (the cleaned corpus), ``reweight`` (all
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
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from memguard.common.atomic import link_folder, write_json
from memguard.common.cache import COMPLETE, Cache, entry_key
from memguard.common.progress import progress_scope
from memguard.common.timing import StepTimer, peak_rss_mb
from memguard.corpus.spec import Corpus
from memguard.dedup.executor import ExecutorConfig
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import DedupResult, cached_dedup
from memguard.diffusion.models import ModelConfig, build_model
from memguard.diffusion.saved import load_model
from memguard.experiment.arms import Arm, best_kind, mitigation_of, parse_arms
from memguard.experiment.metrics import ArmMetrics, arm_metrics, training_samples
from memguard.extract.audit import audit
from memguard.extract.config import AuditConfig
from memguard.extract.inputs import AuditInputs, audit_inputs
from memguard.train.config import TrainConfig
from memguard.train.loop import MODEL_FOLDER, train_model
from memguard.train.mitigations import MitigationConfig
from memguard.train.result import TrainResult, read_train_result
from memguard.train.source import open_training_data

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


@dataclass(frozen=True, kw_only=True)
class TrainedArm:
    folder: Path  # the cache entry: model/, train_result.json, samples/, train/ (logs)
    result: TrainResult
    cached: bool


def _train_arm(shards: str, spec: ExperimentSpec, mitigation: MitigationConfig, *, cache: Cache,
               state: PartialState) -> TrainedArm:  # fmt: skip
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
    return TrainedArm(folder=folder, result=read_train_result(folder), cached=len(cache.hits) > hits)


def _audit_arm(trained: TrainedArm, inputs: AuditInputs, spec: ExperimentSpec, *, cache: Cache) -> tuple[Path, bool]:
    """Audit (or reuse the audit of) one trained arm; (the audit's cache entry, whether it was cached)."""
    key = entry_key("audit", str(trained.folder), asdict(spec.audit), asdict(spec.dedup.embedder), *inputs.key_parts())
    hits = len(cache.hits)

    def run_audit(work: Path) -> None:
        audit(
            load_model(trained.folder / MODEL_FOLDER),
            inputs.reference,
            heldout=inputs.heldout_images,
            heldout_captions=inputs.heldout.captions if inputs.heldout is not None else None,
            cfg=spec.audit,
            out_dir=work,
            embedder=spec.dedup.embedder,
        )

    folder = cache.get("audit", key, run_audit, resumable=True)
    return folder, len(cache.hits) > hits


def _dedup_results(spec: ExperimentSpec, corpus: Corpus, *, cache: Cache, timer: StepTimer) -> dict[str, DedupResult]:
    """The cleaned corpus (``remove``) and, if an arm trains on it, the ``reweight`` one; both cached."""
    corpora = {"dedup": "remove"} | ({"reweight": "reweight"} if any(a.corpus == "reweight" for a in spec.parsed_arms) else {})
    results = {}
    for name, policy in corpora.items():
        with timer.step("dedup" if name == "dedup" else "dedup_reweight") as rec:
            misses = len(cache.misses)
            results[name] = cached_dedup(corpus, replace(spec.dedup, policy=policy), cache=cache, executor=spec.executor)
            rec["cached"] = len(cache.misses) == misses
    return results


def run_experiment(
    spec: ExperimentSpec, corpus: Corpus, *, out_dir: str | Path, cache_dir: str | Path
) -> dict[str, Any]:
    """Dedup the corpus, train every arm of ``spec`` with the same seed and budget, audit each against the
    raw corpus's reference set, and write ``metrics.json`` (docs/METRICS.md) under ``out_dir``. Every stage
    is cached under ``cache_dir``: a second call with the same inputs reads no shard, trains and audits
    nothing."""
    out = Path(out_dir)
    cache = Cache(Path(cache_dir))
    timer = StepTimer()
    started = time.perf_counter()
    # Under `accelerate launch` every process runs this function: the main process fills the caches first,
    # the others then read them; all processes train together; only the main process audits and reports.
    # cpu=True without CUDA: several processes on a CPU machine (torchrun) then share one gloo group.
    state = PartialState(cpu=not torch.cuda.is_available())
    with state.main_process_first():
        results = _dedup_results(spec, corpus, cache=cache, timer=timer)
    cleaned = results["dedup"]
    inputs = audit_inputs(corpus, cleaned, resolution=spec.model.resolution, cache_dir=cache.root)
    shards = {"raw": corpus.location, **{name: str(r.shards) for name, r in results.items()}}
    arms: dict[str, ArmMetrics] = {}
    for parsed in spec.parsed_arms:
        arm = parsed.name
        chosen = _best_kind(spec, arms, state) if parsed.best else None
        mitigation = mitigation_of(parsed, spec.mitigation, chosen)
        with timer.step(f"train_{arm}") as rec, progress_scope(arm):  # bars read "raw: train"
            trained = _train_arm(shards[parsed.corpus], spec, mitigation, cache=cache, state=state)
            rec["cached"] = trained.cached
        if not state.is_main_process:
            continue
        with timer.step(f"extract_{arm}") as rec, progress_scope(arm):
            audited, rec["cached"] = _audit_arm(trained, inputs, spec, cache=cache)
        extract = _publish_arm(out / "arms" / arm, trained, audited)
        samples = training_samples(results, parsed.corpus)
        arms[arm] = arm_metrics(trained.result, extract, corpus=parsed.corpus, mitigations=list(mitigation.kinds),
                                training_samples=samples)  # fmt: skip
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    link_folder(out / "dedup", Path(cleaned.out_dir))
    if "reweight" in results:
        link_folder(out / "dedup_reweight", Path(results["reweight"].out_dir))
    metrics = _metrics(spec, cleaned, arms, timer=timer, seconds=time.perf_counter() - started)
    write_json(out / "metrics.json", metrics)
    return metrics


def _publish_arm(arm_dir: Path, trained: TrainedArm, audited: Path) -> dict[str, Any]:
    """The arm's folder in the run: its training result, last sample grid, links to the cached model and
    logs, and a copy of its audit; returns the audit's metrics."""
    (arm_dir / "train").mkdir(parents=True, exist_ok=True)
    write_json(arm_dir / "train" / "train_result.json",
               {**asdict(trained.result), "model_dir": str(trained.folder / MODEL_FOLDER)})  # fmt: skip
    samples = sorted((trained.folder / "samples").glob("*.png"))
    if samples:
        shutil.copyfile(samples[-1], arm_dir / "train" / "samples.png")
    # The trained model (a diffusers folder) and its training logs live in the cache; the run links them.
    for name, target in (("model", trained.folder / MODEL_FOLDER), ("logs", trained.folder / "train")):
        link_folder(arm_dir / "train" / name, target)
    shutil.copytree(audited, arm_dir / "extract", dirs_exist_ok=True)
    return json.loads((arm_dir / "extract" / "metrics.json").read_text())


def _best_kind(spec: ExperimentSpec, arms: dict[str, ArmMetrics], state: PartialState) -> str:
    """The mitigation a ``+best`` arm takes: chosen on the main process (which alone audits), then sent
    to the others, which train the arm with it."""
    box = [best_kind(spec.parsed_arms, {a: m.row() for a, m in arms.items()}) if state.is_main_process else ""]
    if state.num_processes > 1:
        broadcast_object_list(box)
    return str(box[0])


def _metrics(
    spec: ExperimentSpec, cleaned: DedupResult, arms: dict[str, ArmMetrics], *, timer: StepTimer, seconds: float
) -> dict[str, Any]:
    """The fixed schema every run writes (docs/METRICS.md), which ``memguard.experiment.compare`` reads."""
    stats = cleaned.stats
    evaluation: dict[str, Any] = stats.get("evaluation", {})  # type: ignore[assignment]
    per_arm = {arm: metrics.row() for arm, metrics in arms.items()}
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
