"""The ``apply`` stage: the policy turns clusters into the manifest, clusters.parquet, the removal list,
the cleaned shards and a contact sheet (an embedding corpus has no images: neither of the last two), and
returns the counts for stats.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from memguard.common.atomic import write_table
from memguard.corpus.spec import Corpus
from memguard.dedup.decide.decision import Decision
from memguard.dedup.executor import ExecutorConfig
from memguard.dedup.outputs.clusters import build_clusters, ranked_clusters
from memguard.dedup.outputs.contact_sheet import contact_sheet
from memguard.dedup.outputs.manifest import sample_status
from memguard.dedup.outputs.manifest_tasks import unit_ranges, write_manifest
from memguard.dedup.outputs.shards import write_kept_shards
from memguard.dedup.outputs.stats import build_stats
from memguard.dedup.params import DedupParams
from memguard.dedup.signals.embed import view_layout
from memguard.dedup.signals.local import Verifier, scored_as_candidates
from memguard.dedup.signals.pairs import PairTable, pair_agreement, pair_cosines
from memguard.dedup.stages.contract import StageRun
from memguard.dedup.stages.decide import finite_embeddings
from memguard.dedup.stages.map import Mapped
from memguard.dedup.stages.pairs import Candidates

SHEET_MEMBERS = 12  # thumbnails per contact-sheet row


def write_outputs(
    corpus: Corpus,
    mapped: Mapped,
    decision: Decision,
    *,
    candidates: Candidates,
    params: DedupParams,
    out_dir: Path,
    run: StageRun,
) -> dict[str, object]:
    """Write manifest.parquet, clusters.parquet, removals.parquet, shards/ (unless ``params.write_shards``
    is false) and contact_sheet.png (images only) under ``out_dir``; return the counts for stats.json. The
    manifest and the removals are written by tasks over ranges of units (``outputs/manifest_tasks.py``)."""
    valid_rows, policy = mapped.valid_rows, params.policy
    n = len(valid_rows)
    keeper = decision.keeper
    jaccard, image_sim = _similarities_to_keepers(mapped, decision, candidates=candidates, params=params)
    keys = mapped.units.column("key")
    with run.cache.scratch("manifest") as scratch:
        counts = write_manifest(
            mapped.units_file,
            unit_ranges(mapped.layout.rows),
            decision,
            caption_jaccard=jaccard,
            image_sim=image_sim,
            keeper_keys=lambda samples: keys.take(pa.array(valid_rows[samples])),
            policy=policy,
            id_column=corpus.id_column or "key",
            scratch=scratch,
            out_dir=out_dir,
            run=run.run_tasks,
        )
    ranked = ranked_clusters(decision)
    write_table(out_dir / "clusters.parquet", build_clusters(keys, valid_rows, decision, ranked=ranked))

    shards_written = 0
    if mapped.layout.kind != "embeddings":
        shards_written = _write_images(corpus, mapped, decision, ranked=ranked, params=params, out_dir=out_dir,
                                       executor=run.executor)  # fmt: skip
    is_keeper = decision.finite & (keeper == np.arange(n))
    return build_stats(
        counts,
        valid_samples=n,
        cluster_sizes=decision.size[is_keeper].astype(int).tolist(),
        clusters_with_duplicates=len(ranked),
        policy=policy,
        shards_written=shards_written,
    )


def _similarities_to_keepers(
    mapped: Mapped, decision: Decision, *, candidates: Candidates, params: DedupParams
) -> tuple[np.ndarray, np.ndarray]:
    """Each valid sample's caption Jaccard (NaN where either caption is unusable) and image similarity
    with its keeper, the latter as the rule saw it: as the candidates scored the pair, else verified.
    NaN outside clusters of two or more, where the manifest shows none (not computed there)."""
    n = len(mapped.valid_rows)
    jaccard, image_sim = np.full(n, np.nan), np.full(n, np.nan)
    multi = np.flatnonzero(decision.size > 1)
    keeper = decision.keeper[multi]
    views = view_layout(params.embedder.kind)
    sims = pair_cosines(finite_embeddings(mapped.embeddings, decision.finite), multi, keeper, layout=views)
    if params.local.enabled:
        known = PairTable.of(candidates.image_pairs, candidates.image_sims, n)
        verifier = Verifier(mapped.features, params.local, rows=mapped.feature_rows)
        sims = scored_as_candidates(sims, multi, keeper, known=known, verifier=verifier)
    image_sim[multi] = sims
    usable = candidates.usable
    agreement = pair_agreement(candidates.signatures, multi, keeper)
    jaccard[multi] = np.where(usable[multi] & usable[keeper], agreement, np.nan)
    return jaccard, image_sim


def _write_images(
    corpus: Corpus,
    mapped: Mapped,
    decision: Decision,
    *,
    ranked: list[np.ndarray],
    params: DedupParams,
    out_dir: Path,
    executor: ExecutorConfig,
) -> int:
    """The kept samples' shards and the contact sheet of the largest clusters; the shards written."""
    units, keeper = mapped.units, decision.keeper
    status, weight = sample_status(decision, params.policy)
    sheet = [m[:SHEET_MEMBERS] for m in ranked[: params.sheet_clusters]]
    shards_written, thumbs = write_kept_shards(
        mapped.layout,
        units.column("sample_index").to_numpy(),
        unit_keys=units.column("key").to_numpy(zero_copy_only=False),
        limits=corpus.limits,
        captions=corpus.captions,
        kept=status == "kept",
        weights=weight if params.policy == "reweight" else None,
        out_dir=out_dir,
        shard_size=params.shard_size if params.write_shards else 0,
        thumbnails_of={int(i) for m in sheet for i in m},
        executor=executor,
    )
    # Each row: the keeper first (framed green), then the removed members (red).
    contact_sheet(
        [[(thumbs[int(i)], bool(keeper[i] == i)) for i in sorted(m, key=lambda i: keeper[i] != i)] for m in sheet],
        out_dir / "contact_sheet.png",
    )
    return shards_written
