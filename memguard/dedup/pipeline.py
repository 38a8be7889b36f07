"""``run_dedup``: the dedup stages in order (``memguard.dedup.stages``: map → pairs → decide → apply), then the
run's record. Callable without Hydra:
``run_dedup(corpus, DedupParams(), out_dir=out, cache=Cache(cache_dir))``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from memguard.common import storage
from memguard.common.atomic import committed_run, write_json
from memguard.common.cache import Cache, entry_key
from memguard.common.config import ConfigError
from memguard.common.storage import committed_remote_run
from memguard.corpus.spec import Corpus
from memguard.dedup.decide.decision import Decision
from memguard.dedup.decide.evaluate import evaluate
from memguard.dedup.executor import ExecutorConfig
from memguard.dedup.params import DedupParams
from memguard.dedup.parts import corpus_parts
from memguard.dedup.signals.precomputed import cached_lookup
from memguard.dedup.stages.apply import write_outputs
from memguard.dedup.stages.contract import StageRun
from memguard.dedup.stages.decide import decide
from memguard.dedup.stages.map import MapParams, Mapped, map_corpus
from memguard.dedup.stages.pairs import find_candidates

RESULT_NAMES = (
    "manifest.parquet", "clusters.parquet", "removals.parquet", "shards", "contact_sheet.png", "stats.json"
)  # fmt: skip  (the marker last)


@dataclass
class DedupResult:
    """Where the outputs went: local paths, or URLs when ``out_dir`` was in object storage."""

    out_dir: str
    shards: str | None
    manifest: str
    stats: dict[str, object]


def run_dedup(
    corpus: Corpus, params: DedupParams, *, out_dir: str | Path, cache: Cache, executor: ExecutorConfig | None = None
) -> DedupResult:
    """Find the near-duplicates of ``corpus`` and write the cleaned corpus under ``out_dir``: one manifest
    row per input unit, clusters, shards (unless ``params.write_shards`` is false), stats and a contact
    sheet. Steps before the thresholds are cached in ``cache``, so a threshold sweep reruns only the
    decision and the outputs. ``out_dir`` may be an object-storage URL (``s3://bucket/clean``): the
    outputs are then staged locally and committed there (``memguard.common.storage.committed_remote_run``).
    ``executor``: how the per-part map and apply stages run (default: a process pool over all cores);
    the result does not depend on it."""
    run = StageRun(cache, executor or ExecutorConfig())
    params = params_for_corpus(corpus, params)
    out = str(out_dir).rstrip("/") if storage.is_remote(out_dir) else str(Path(out_dir))
    corpus = replace(corpus, captions=replace(corpus.captions, required=params.caption_enabled))

    with run.timer.step("map") as record:  # one read and one decode of every unit, per part, cached per part
        map_params = MapParams(corpus.limits, corpus.captions, params.minhash, params.embedder, params.local.features if params.local.enabled else None)
        lookup = cached_lookup(cache, params.embeddings, params.embeddings_id) if params.embeddings else None
        mapped = map_corpus(corpus, map_params, cache=cache, executor=run.executor, lookup=lookup)
        record.update(cached=mapped.computed == 0, parts=mapped.parts, parts_computed=mapped.computed)
    candidates = find_candidates(mapped, params, run)
    with run.timer.step("cluster"):
        decision = decide(mapped, candidates, params)
    # The outputs are staged and committed as a whole: an interrupted or failed run never leaves a mix of
    # two results, or a result that looks complete and is not.
    commit = committed_remote_run(out, RESULT_NAMES) if storage.is_remote(out) else committed_run(out, RESULT_NAMES)
    with commit as staging:
        with run.timer.step("apply"):
            stats = write_outputs(
                corpus, mapped, decision, candidates=candidates, params=params, out_dir=staging, run=run
            )
        stats.update(_run_record(corpus, mapped, decision, params=params, run=run))
        write_json(staging / "stats.json", stats)
    return DedupResult(out, f"{out}/shards" if params.write_shards else None, f"{out}/manifest.parquet", stats)


def params_for_corpus(corpus: Corpus, params: DedupParams) -> DedupParams:
    """``params`` as they apply to ``corpus``: an embedding corpus's image signal is its own vectors
    (``precomputed``, single-view, whatever ``dedup.image.kind`` says), and it has no pixels to verify
    locally, to write as shards or to show on a contact sheet; an image corpus with
    ``dedup.image.embeddings`` compares the curator's vectors (``precomputed``) instead of embedding."""
    if corpus.kind != "embeddings":
        if params.embeddings is None:
            return params
        return replace(params, embedder=replace(params.embedder, kind="precomputed", weights=None))
    if params.embeddings is not None:
        raise ConfigError("dedup.image.embeddings is for image corpora: corpus=embeddings compares its own vectors")
    return replace(
        params,
        embedder=replace(params.embedder, kind="precomputed", weights=None),
        local=replace(params.local, enabled=False),
        write_shards=False,
        sheet_clusters=0,
    )


def cached_dedup(
    corpus: Corpus, params: DedupParams, *, cache: Cache, executor: ExecutorConfig | None = None
) -> DedupResult:
    """``run_dedup`` into the cache entry ``dedup/<key>``, keyed by what its outputs depend on: the corpus's
    parts as the map stage identifies them (a stat each, no read), its limits, captions and ground truth,
    and ``params``. A rerun with the same inputs reads no part and writes nothing: the main job's
    products of the dedup result (cleaned shards, reference set, sample counts) are then cached too."""
    _, _, identities = corpus_parts(corpus)
    truth = corpus.ground_truth
    key = entry_key(
        "dedup",
        identities,
        asdict(corpus.limits),
        asdict(corpus.captions),
        [str(truth), storage.stat_key(str(truth))] if truth is not None and truth.exists() else None,
        corpus.fingerprint,
        asdict(params),
    )
    folder = cache.get("dedup", key, lambda work: run_dedup(corpus, params, out_dir=work, cache=cache, executor=executor))
    stats = json.loads((folder / "stats.json").read_text())
    return DedupResult(str(folder), str(folder / "shards") if params.write_shards else None,
                       str(folder / "manifest.parquet"), stats)  # fmt: skip


def _run_record(
    corpus: Corpus, mapped: Mapped, decision: Decision, *, params: DedupParams, run: StageRun
) -> dict[str, object]:
    """What stats.json says of the run besides the counts: evaluation, corpus, steps, cache, parameters."""
    record: dict[str, object] = {}
    if corpus.ground_truth is not None and corpus.ground_truth.exists():
        finite_idx = np.flatnonzero(decision.finite)
        keys = mapped.units.column("key").take(pa.array(mapped.valid_rows[finite_idx]))
        record["evaluation"] = evaluate(keys, decision.labels[finite_idx], corpus.ground_truth)
    record["corpus"] = {
        "kind": corpus.kind,
        "location": storage.redact(corpus.location),
        "fingerprint": corpus.fingerprint,
        "id_column": corpus.id_column or "key",  # what the manifest's key and removals.parquet's ids are
        **({"info": corpus.info} if corpus.info else {}),
    }
    record["steps"] = run.timer.steps
    record["cache"] = {"hits": list(run.cache.hits), "misses": list(run.cache.misses)}
    record["params"] = asdict(params)
    # Where the run's image embeddings stay (the joined map entry: units.parquet and embeddings.npy,
    # one row per sample): CopyGuard.from_dedup guards against the training set without embedding it again.
    record["embeddings_entry"] = str(run.cache.path("joined", mapped.key).resolve())
    return record
