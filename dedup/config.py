"""The ``dedup`` config group's vocabulary (``dedup.caption.threshold``) ↔ the typed parameters.

The defaults live in the dataclasses only: ``dedup_values(DedupParams())`` is what Hydra composes as the
group's base (``configs/registry.py``), and ``dedup_params`` turns the composed dict back into
``DedupParams``. Unknown keys are errors, so a typo in an override never silently does nothing.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from common.config import build
from dedup.builtin.twemoji import TwemojiConfig
from dedup.decide.cluster import ClusterRule
from dedup.decide.semdedup import SemDedupParams
from dedup.io.corpus import CorpusSpec
from dedup.io.validate import Limits
from dedup.pipeline import DedupParams
from dedup.signals.caption_embed import CaptionSemanticParams
from dedup.signals.embed import EmbedderParams
from dedup.signals.lsh import LshParams
from dedup.signals.minhash import MinHashParams
from dedup.signals.neighbors import IndexParams

SEMANTIC_THRESHOLD = 0.9  # caption cosine of the semantic clause when the user does not set one


def dedup_values(params: DedupParams) -> dict[str, Any]:
    """``DedupParams`` → the nested vocabulary of the ``dedup`` config group (the inverse of ``dedup_params``).

    caption.*: MinHash (``ngram``, ``char_ngrams``, ``num_perm``, ``seed``), LSH (``lsh_threshold`` — the
    cached candidate floor, ``bands``/``rows``/``max_bucket``), ``threshold`` (Jaccard of the caption+image
    clause) and ``semantic.*`` (the optional MiniLM signal, its ``threshold`` and cached ``floor``).
    image.*: the embedder, ``threshold`` (cosine alone), ``loose_threshold`` (with a caption match) and
    ``index.*`` (faiss). ``exact``: identical pixels always match. ``policy``: remove | reweight | keep |
    semdedup."""
    rule = params.rule
    semantic_threshold = rule.caption_semantic_threshold
    return {
        "caption": {
            **asdict(params.minhash),
            "lsh_threshold": params.lsh.threshold,
            "bands": params.lsh.bands,
            "rows": params.lsh.rows,
            "max_bucket": params.lsh.max_bucket,
            "threshold": rule.caption_threshold,
            "semantic": {
                **asdict(params.caption_semantic),
                "threshold": SEMANTIC_THRESHOLD if semantic_threshold is None else semantic_threshold,
            },
        },
        "image": {
            **asdict(params.embedder),
            "threshold": rule.image_threshold,
            "loose_threshold": rule.loose_image_threshold,
            "index": asdict(params.index),
        },
        "exact": rule.use_exact,
        "policy": params.policy,
        "semdedup": asdict(params.semdedup),
        "shard_size": params.shard_size,
        "write_shards": params.write_shards,
        "sheet_clusters": params.sheet_clusters,
    }


def corpus_spec(values: dict[str, Any]) -> CorpusSpec:
    values = dict(values)
    twemoji = values.pop("twemoji", None) or {}
    return CorpusSpec(**values, twemoji=build(TwemojiConfig, twemoji))


def limits(values: dict[str, Any] | None) -> Limits:
    return build(Limits, values)


def dedup_params(values: dict[str, Any]) -> DedupParams:
    """The ``dedup`` config group → DedupParams."""
    v = dict(values)
    caption = dict(v.pop("caption"))
    image = dict(v.pop("image"))
    minhash = MinHashParams(
        num_perm=caption.pop("num_perm"),
        seed=caption.pop("seed"),
        ngram=caption.pop("ngram"),
        char_ngrams=caption.pop("char_ngrams"),
    )
    lsh = LshParams(
        threshold=caption.pop("lsh_threshold"),
        bands=caption.pop("bands", None),
        rows=caption.pop("rows", None),
        max_bucket=caption.pop("max_bucket", 64),
    )
    semantic = dict(caption.pop("semantic", None) or {})
    semantic_threshold = semantic.pop("threshold", SEMANTIC_THRESHOLD)
    caption_semantic = build(CaptionSemanticParams, semantic)
    rule = ClusterRule(
        image_threshold=image.pop("threshold"),
        caption_threshold=caption.pop("threshold"),
        loose_image_threshold=image.pop("loose_threshold"),
        use_exact=v.pop("exact"),
        caption_semantic_threshold=semantic_threshold if caption_semantic.enabled else None,
    )
    index = build(IndexParams, image.pop("index"))
    embedder = build(EmbedderParams, image)
    if caption:
        raise ValueError(f"unknown dedup.caption option(s): {sorted(caption)}")
    semdedup = build(SemDedupParams, v.pop("semdedup", None))
    return DedupParams(
        minhash=minhash,
        lsh=lsh,
        caption_semantic=caption_semantic,
        embedder=embedder,
        index=index,
        rule=rule,
        semdedup=semdedup,
        **v,
    )
