"""The dedup stage: cached steps (the map stage per part → caption pairs → image pairs), then
clustering and a policy, then the outputs: cleaned shards, manifest.parquet, clusters.parquet,
stats.json and a contact sheet. Callable without Hydra:
``run_dedup(corpus, DedupParams(), out_dir=out, cache=Cache(cache_dir))``.

The step functions live in ``dedup.steps``; this module only wires them through the cache, then decides
(``dedup.decide``) and writes (``dedup.outputs``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from common import storage
from common.atomic import committed_run, write_json
from common.cache import Cache, entry_key
from common.config import ConfigError, in_range, one_of
from common.mapped import release
from common.storage import committed_remote_run
from common.timing import StepTimer
from dedup.decide.cluster import ClusterRule, PairScorer, cluster, merge_candidates
from dedup.decide.evaluate import evaluate
from dedup.decide.semdedup import SemDedupParams, semdedup
from dedup.executor import ExecutorConfig
from dedup.io.corpus import Corpus
from dedup.outputs.apply import write_outputs
from dedup.outputs.decision import Decision
from dedup.outputs.manifest import POLICIES
from dedup.shardmap import MapParams, map_corpus
from dedup.signals.caption_embed import CaptionSemanticParams, embed_captions
from dedup.signals.embed import EmbedderParams, view_layout
from dedup.signals.lsh import LshParams, caption_pairs
from dedup.signals.minhash import MinHashParams
from dedup.signals.neighbors import IndexParams, finite_rows
from dedup.signals.views import view
from dedup.steps import MIN_CAPTION_CHARS, compute_neighbor_pairs, long_enough, sorted_group_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DedupParams:
    """Everything the dedup stage needs besides the corpus. policy: remove | reweight | keep | semdedup.
    caption_enabled: false → image-only dedup (identical pixels and image cosine); captions are neither
    required nor compared."""

    minhash: MinHashParams = field(default_factory=MinHashParams)
    lsh: LshParams = field(default_factory=LshParams)
    caption_semantic: CaptionSemanticParams = field(default_factory=CaptionSemanticParams)
    embedder: EmbedderParams = field(default_factory=EmbedderParams)
    index: IndexParams = field(default_factory=IndexParams)
    rule: ClusterRule = field(default_factory=ClusterRule)
    policy: str = "remove"
    semdedup: SemDedupParams = field(default_factory=SemDedupParams)
    shard_size: int = 10_000
    write_shards: bool = True
    sheet_clusters: int = 12
    caption_enabled: bool = True

    def __post_init__(self) -> None:
        one_of("dedup.policy", self.policy, POLICIES)
        if not self.caption_enabled and self.caption_semantic.enabled:
            raise ConfigError("dedup.caption.semantic.enabled=true needs dedup.caption.enabled=true")
        if self.write_shards:
            in_range("dedup.shard_size (with dedup.write_shards=true)", self.shard_size, lo=1)
        in_range("dedup.sheet_clusters", self.sheet_clusters, lo=0)
        semantic = self.rule.caption_semantic_threshold
        if semantic is not None and not self.caption_semantic.enabled:
            raise ConfigError("rule.caption_semantic_threshold is set but caption_semantic.enabled is false")
        if semantic is not None and semantic < self.caption_semantic.floor:
            raise ConfigError(
                f"dedup.caption.semantic.threshold {semantic} < dedup.caption.semantic.floor {self.caption_semantic.floor}"
            )
        if self.rule.caption_threshold < self.lsh.threshold:
            raise ConfigError(
                f"dedup.caption.threshold {self.rule.caption_threshold} < dedup.caption.lsh_threshold {self.lsh.threshold}: "
                "candidates below the LSH floor were never kept"
            )
        if self.rule.image_threshold < self.index.min_sim or self.rule.loose_image_threshold < self.index.min_sim:
            # Pairs below index.min_sim were never searched for; a lower threshold would silently find fewer.
            raise ConfigError(
                f"dedup.image.threshold and loose_threshold ({self.rule.image_threshold}, "
                f"{self.rule.loose_image_threshold}) must be >= dedup.image.index.min_sim ({self.index.min_sim})"
            )


RESULT_NAMES = ("manifest.parquet", "clusters.parquet", "shards", "contact_sheet.png", "stats.json")  # marker last


@dataclass
class DedupResult:
    """Where the outputs went: local paths, or URLs when ``out_dir`` was in object storage."""

    out_dir: str
    shards: str | None
    manifest: str
    stats: dict[str, object]


def _cached(cache: Cache, timer: StepTimer, step: str, key: str, compute: Callable[[Path], None]) -> Path:
    with timer.step(step) as record:
        hits = len(cache.hits)
        folder = cache.get(step, key, compute)
        record["cached"] = len(cache.hits) > hits
    return folder


def _save(folder: Path, **arrays: np.ndarray) -> None:
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value, allow_pickle=False)


def _load(folder: Path, *names: str) -> list[np.ndarray]:
    return [np.load(folder / f"{name}.npy", allow_pickle=False) for name in names]


def _cached_arrays(
    cache: Cache,
    timer: StepTimer,
    step: str,
    key: str,
    names: tuple[str, ...],
    compute: Callable[[], tuple[np.ndarray, ...]],
) -> list[np.ndarray]:
    """A cached step whose outputs are named arrays: computed and saved on a miss, loaded either way."""
    folder = _cached(cache, timer, step, key, lambda d: _save(d, **dict(zip(names, compute(), strict=True))))
    return _load(folder, *names)


def run_dedup(
    corpus: Corpus, params: DedupParams, *, out_dir: str | Path, cache: Cache, executor: ExecutorConfig | None = None
) -> DedupResult:
    """Find the near-duplicates of ``corpus`` and write the cleaned corpus under ``out_dir``: one manifest
    row per input unit, clusters, shards (unless ``params.write_shards`` is false), stats and a contact
    sheet. Steps before the thresholds are cached in ``cache``, so a threshold sweep reruns only the
    clustering and the outputs. ``out_dir`` may be an object-storage URL (``s3://bucket/clean``): the
    outputs are then staged locally and committed there (``common.storage.committed_remote_run``).
    ``executor``: how the per-part map and apply stages run (default: a process pool over all cores);
    the result does not depend on it."""
    executor = executor or ExecutorConfig()
    out = str(out_dir).rstrip("/") if storage.is_remote(out_dir) else str(Path(out_dir))
    timer = StepTimer()
    corpus = replace(corpus, captions=replace(corpus.captions, required=params.caption_enabled))

    with timer.step("map") as record:  # one read and one decode of every unit, per part, cached per part
        mapped = map_corpus(
            corpus,
            MapParams(corpus.limits, corpus.captions, params.minhash, params.embedder),
            cache=cache,
            executor=executor,
        )
        record.update(cached=mapped.computed == 0, parts=mapped.parts, parts_computed=mapped.computed)
    k_map = mapped.key
    units, embeddings = mapped.units, mapped.embeddings
    valid_rows = np.flatnonzero(units.column("sample_index").to_numpy() >= 0)
    # Only the columns the decisions read (the units table's other columns are large at 10^6+ samples).
    valid = units.select(["key", "caption_norm", "pixel_hash", "width", "height"]).take(pa.array(valid_rows))
    n = len(valid_rows)

    if params.caption_enabled:
        signatures, usable = mapped.signatures, mapped.usable
        k_cap = entry_key("caption_pairs", k_map, params.lsh)
        cap_pairs, cap_jaccard = _cached_arrays(
            cache,
            timer,
            "caption_pairs",
            k_cap,
            ("pairs", "jaccard"),
            lambda: caption_pairs(signatures, usable, params.lsh),
        )
    else:  # image-only: no caption signal at all (a caption a corpus happens to carry is not compared)
        signatures = np.zeros((n, params.minhash.num_perm), np.uint32)
        usable = np.zeros(n, bool)
        cap_pairs, cap_jaccard = np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    views = view_layout(params.embedder.kind)
    k_nn = entry_key("image_neighbors", k_map, params.index)
    img_pairs, img_sims = _cached_arrays(
        cache,
        timer,
        "image_neighbors",
        k_nn,
        ("pairs", "sims"),
        lambda: compute_neighbor_pairs(embeddings, params.index, views),
    )

    caption_emb, semantic_pairs = _caption_semantics(cache, timer, k_map, valid.column("caption_norm"), params)

    with timer.step("cluster"):
        finite = finite_rows(embeddings) if n else np.zeros(0, bool)
        safe_emb = embeddings if finite.all() else np.where(finite[:, None], embeddings, 0.0).astype(np.float32)
        exact_groups = sorted_group_ids(valid.column("pixel_hash"))
        exact_groups = np.where(finite, exact_groups, -1 - np.arange(n))  # non-finite rows never pair
        keys = valid.column("key").to_numpy(zero_copy_only=False).astype(str)
        area = valid.column("width").to_numpy().astype(np.int64) * valid.column("height").to_numpy().astype(np.int64)
        order = np.lexsort((keys, -area)) if n else np.zeros(0, np.int64)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        if params.policy == "semdedup":
            base = np.ascontiguousarray(view(safe_emb, views, 0))  # SemDeDup clusters the base view
            decision = _semdedup_decision(base, finite, params.semdedup)
        else:
            cap_ok = finite[cap_pairs[:, 0]] & finite[cap_pairs[:, 1]] if len(cap_pairs) else np.zeros(0, bool)
            if semantic_pairs is not None:
                semantic_pairs = semantic_pairs[finite[semantic_pairs[:, 0]] & finite[semantic_pairs[:, 1]]]
            edges = merge_candidates(
                n,
                embeddings=safe_emb,
                image_pairs=img_pairs,
                image_sims=img_sims,
                caption_pairs=cap_pairs[cap_ok],
                caption_jaccard=cap_jaccard[cap_ok],
                exact_groups=exact_groups,
                caption_embeddings=caption_emb,
                semantic_pairs=semantic_pairs,
                views=views,
            )
            scorer = PairScorer(safe_emb, signatures, usable, exact_groups, caption_emb, views)
            found = cluster(n, edges, rule=params.rule, rank=rank, scorer=scorer)
            decision = Decision(
                labels=found.labels, keeper=found.keeper, size=found.size, signal=found.signal, finite=finite
            )
        release(embeddings, signatures)  # pages the scorer touched (memory-mapped: common/mapped.py)

    # The outputs are staged and committed as a whole: an interrupted or failed run never leaves a mix of
    # two results, or a result that looks complete and is not.
    commit = committed_remote_run(out, RESULT_NAMES) if storage.is_remote(out) else committed_run(out, RESULT_NAMES)
    with commit as staging:
        with timer.step("apply"):
            stats = write_outputs(
                corpus,
                units,
                valid_rows=valid_rows,
                decision=decision,
                signatures=signatures,
                usable=usable,
                embeddings=safe_emb,
                policy=params.policy,
                out_dir=staging,
                shard_size=params.shard_size if params.write_shards else 0,
                sheet_clusters=params.sheet_clusters,
                layout=mapped.layout,
                executor=executor,
                views=views,
            )
        if corpus.ground_truth is not None and corpus.ground_truth.exists():
            finite_idx = np.flatnonzero(decision.finite)
            stats["evaluation"] = evaluate(keys[finite_idx].tolist(), decision.labels[finite_idx], corpus.ground_truth)
        stats["corpus"] = {
            "kind": corpus.kind,
            "location": storage.redact(corpus.location),
            "fingerprint": corpus.fingerprint,
            **({"info": corpus.info} if corpus.info else {}),
        }
        stats["steps"] = timer.steps
        stats["cache"] = {"hits": list(cache.hits), "misses": list(cache.misses)}
        stats["params"] = asdict(params)
        # Where the run's image embeddings stay (the joined map entry: units.parquet and embeddings.npy,
        # one row per sample): CopyGuard.from_dedup guards against the training set without embedding it again.
        stats["embeddings_entry"] = str(cache.path("joined", k_map).resolve())
        write_json(staging / "stats.json", stats)
    return DedupResult(out, f"{out}/shards" if params.write_shards else None, f"{out}/manifest.parquet", stats)


def _caption_semantics(
    cache: Cache, timer: StepTimer, k_map: str, caption_column: pa.ChunkedArray, params: DedupParams
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The optional third signal: MiniLM caption embeddings and their neighbour pairs (both cached)."""
    semantic = params.caption_semantic
    if not semantic.enabled:
        return None, None
    captions: list[str] = caption_column.to_pylist()
    usable = long_enough(captions)
    k_emb = entry_key("caption_embeddings", k_map, semantic.weights, MIN_CAPTION_CHARS)
    (vectors,) = _cached_arrays(
        cache,
        timer,
        "caption_embeddings",
        k_emb,
        ("embeddings",),
        lambda: (embed_captions(captions, usable, semantic),),
    )
    index = replace(params.index, min_sim=semantic.floor)
    k_nn = entry_key("caption_neighbors", k_emb, index)
    pairs, _ = _cached_arrays(
        cache, timer, "caption_neighbors", k_nn, ("pairs", "sims"), lambda: compute_neighbor_pairs(vectors, index)
    )
    return vectors, pairs


def _semdedup_decision(embeddings: np.ndarray, finite: np.ndarray, params: SemDedupParams) -> Decision:
    rows = np.flatnonzero(finite)
    dup_local, _ = semdedup(embeddings[rows], params)
    keeper = np.arange(len(embeddings))
    keeper[rows] = np.where(dup_local >= 0, rows[np.maximum(dup_local, 0)], rows)
    _, labels = np.unique(keeper, return_inverse=True)
    size = np.bincount(labels)[labels]
    signal = np.where(keeper != np.arange(len(keeper)), "semdedup", "")
    signal = np.where(size > 1, "semdedup", signal).astype(object)
    return Decision(labels=labels, keeper=keeper, size=size, signal=signal, finite=finite)
