"""``manifest.parquet``: exactly one row per input unit, in input order, built column by column (a range of
units at a time: ``memguard.dedup.outputs.manifest_tasks``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from memguard.corpus.sample import Reason
from memguard.dedup.decide.decision import Decision

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("offset", pa.int64()),
        ("status", pa.string()),  # kept | duplicate | rejected
        ("reason", pa.string()),  # a Reason for rejected rows, "" otherwise
        ("detail", pa.string()),
        ("cluster_id", pa.int64()),  # -1 for rejected rows
        ("cluster_size", pa.int64()),  # 0 for rejected rows
        ("duplicate_of", pa.string()),  # the keeper's key for duplicates
        ("signal", pa.string()),  # what joined the sample to its cluster ("" for singletons)
        ("caption_jaccard", pa.float64()),  # with the keeper; NaN for singletons or unusable captions
        ("image_sim", pa.float64()),  # image cosine with the keeper; NaN for singletons
        ("weight", pa.float64()),  # sampling weight under the policy (0 for removed and rejected)
    ]
)
POLICIES = ("remove", "reweight", "keep", "semdedup")


def sample_status(decision: Decision, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """(status, weight) per valid sample under ``policy``; non-finite samples are ``rejected``."""
    if policy == "reweight":
        status = np.full(len(decision.size), "kept", dtype=object)
        weight = 1.0 / decision.size
    elif policy == "keep":
        status = np.full(len(decision.size), "kept", dtype=object)
        weight = np.ones(len(decision.size))
    else:
        dup = decision.removable
        status = np.where(dup, "duplicate", "kept").astype(object)
        weight = np.where(dup, 0.0, 1.0)
    status = np.where(decision.finite, status, "rejected").astype(object)
    return status, np.where(decision.finite, weight, 0.0)


def build_manifest(
    units: pa.Table,
    valid_rows: np.ndarray,
    decision: Decision,
    *,
    caption_jaccard: np.ndarray,
    image_sim: np.ndarray,
    keeper_key: np.ndarray,
    policy: str,
) -> pa.Table:
    """Rows of units the readers or the decoder refused keep their reason; valid samples get their cluster,
    keeper, signal, similarities to the keeper and weight. ``decision`` (a slice of a run's: its ``first``),
    ``caption_jaccard``, ``image_sim`` and ``keeper_key`` (the keeper's key for a removable sample, ""
    otherwise) are per valid sample, aligned with ``valid_rows``, the valid samples' rows of ``units``."""
    n_units = units.num_rows
    column = {name: units.column(name).to_numpy(zero_copy_only=False) for name in ("key", "reason", "detail")}
    status = np.full(n_units, "rejected", dtype=object)
    reason = column["reason"].astype(object)
    detail = column["detail"].astype(object)
    cluster_id = np.full(n_units, -1, np.int64)
    cluster_size = np.zeros(n_units, np.int64)
    duplicate_of = np.full(n_units, "", dtype=object)
    signal = np.full(n_units, "", dtype=object)
    jaccard = np.full(n_units, np.nan)
    sim = np.full(n_units, np.nan)
    weight = np.zeros(n_units)

    valid_status, valid_weight = sample_status(decision, policy)
    finite = decision.finite
    rows = valid_rows[finite]  # unit rows of the samples that are clustered
    multi = decision.size[finite] > 1
    status[valid_rows] = valid_status
    reason[valid_rows] = np.where(finite, "", str(Reason.NON_FINITE_EMBEDDING))
    detail[valid_rows] = ""
    cluster_id[rows] = decision.labels[finite]
    cluster_size[rows] = decision.size[finite]
    # Under every policy a non-keeper names its keeper (under reweight and keep it stays, as "kept").
    duplicate_of[rows] = np.where(decision.removable[finite], keeper_key[finite], "")
    signal[rows] = np.where(multi, decision.signal[finite].astype(str), "")
    jaccard[rows] = np.where(multi, caption_jaccard[finite], np.nan)
    sim[rows] = np.where(multi, image_sim[finite], np.nan)
    weight[valid_rows] = valid_weight
    arrays = {
        "key": column["key"],
        "source": units.column("source"),
        "offset": units.column("offset"),
        "status": status,
        "reason": reason,
        "detail": detail,
        "cluster_id": cluster_id,
        "cluster_size": cluster_size,
        "duplicate_of": duplicate_of,
        "signal": signal,
        "caption_jaccard": jaccard,
        "image_sim": sim,
        "weight": weight,
    }
    columns = [
        pa.array(value, type=field.type) if isinstance(value, np.ndarray) else value.cast(field.type)
        for field, value in ((f, arrays[f.name]) for f in MANIFEST_SCHEMA)
    ]
    return pa.Table.from_arrays(columns, schema=MANIFEST_SCHEMA)
