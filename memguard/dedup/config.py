"""The ``dedup`` config group's vocabulary (``dedup.caption.threshold``) ↔ the typed parameters.

The defaults live in the dataclasses only: ``dedup_values(DedupParams())`` is what Hydra composes as the
group's base (``memguard/configs/registry.py``), and ``dedup_params`` turns the composed dict back into
``DedupParams``. Unknown keys are errors, so a typo in an override never silently does nothing.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from memguard.common.config import ConfigError, all_finite, build
from memguard.corpus.spec import CorpusSpec
from memguard.corpus.twemoji import TwemojiConfig
from memguard.corpus.validate import Limits
from memguard.dedup.decide.cluster import ClusterRule
from memguard.dedup.decide.semdedup import SemDedupParams
from memguard.dedup.params import DedupParams
from memguard.dedup.signals.caption_embed import CaptionSemanticParams
from memguard.dedup.signals.embed import EmbedderParams
from memguard.dedup.signals.local_params import LocalParams
from memguard.dedup.signals.lsh import LshParams
from memguard.dedup.signals.minhash import MinHashParams
from memguard.dedup.signals.neighbors import IndexParams

SEMANTIC_THRESHOLD = 0.9  # caption cosine of the semantic clause when the user does not set one


def default_values() -> dict[str, Any]:
    """The ``dedup`` group's defaults in its vocabulary (the registry's base node)."""
    return dedup_values(DedupParams())


def dedup_values(params: DedupParams) -> dict[str, Any]:
    """``DedupParams`` → the nested vocabulary of the ``dedup`` config group (the inverse of ``dedup_params``).

    caption.*: ``enabled`` (false: image-only dedup), MinHash (``ngram``, ``char_ngrams``, ``num_perm``, ``seed``), LSH (``lsh_threshold`` — the
    cached candidate floor, ``bands``/``rows``/``max_bucket``), ``threshold`` (Jaccard of the caption+image
    clause) and ``semantic.*`` (the optional MiniLM signal, its ``threshold`` and cached ``floor``).
    image.*: the embedder, ``threshold`` (cosine alone), ``loose_threshold`` (with a caption match),
    ``assign_margin`` (similarities this close to a removed sample's best keeper are ties, decided by keeper
    priority), ``index.*`` (faiss), ``local.*`` (local features with geometric verification) and
    ``embeddings``/``embeddings_id`` (the curator's own vectors for an image corpus). ``exact``: identical pixels always match. ``policy``: remove | reweight | keep |
    semdedup."""
    rule = params.rule
    semantic_threshold = rule.caption_semantic_threshold
    return {
        "caption": {
            "enabled": params.caption_enabled,
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
            "assign_margin": rule.assign_margin,
            "index": asdict(params.index),
            "local": asdict(params.local),
            "embeddings": params.embeddings,
            "embeddings_id": params.embeddings_id,
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
    twemoji = build(TwemojiConfig, values.pop("twemoji", None) or {}, "corpus.twemoji")
    return build(CorpusSpec, {**values, "twemoji": twemoji}, "corpus")


def limits(values: dict[str, Any] | None) -> Limits:
    return build(Limits, values, "limits")


def _number(section: dict[str, Any], key: str, path: str) -> float:
    value = section.pop(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not all_finite(value):
        raise ConfigError(f"{path}.{key}: expected a finite number, got {value!r}")
    return float(value)


def dedup_params(values: dict[str, Any]) -> DedupParams:
    """The ``dedup`` config group → DedupParams (unknown keys, wrong types and bad ranges are ConfigErrors)."""
    v = dict(values)
    caption = dict(v.pop("caption"))
    image = dict(v.pop("image"))
    caption_enabled = caption.pop("enabled", True)
    if not isinstance(caption_enabled, bool):
        raise ConfigError(f"dedup.caption.enabled: expected true or false, got {caption_enabled!r}")
    minhash = build(
        MinHashParams, {k: caption.pop(k) for k in ("num_perm", "seed", "ngram", "char_ngrams")}, "dedup.caption"
    )
    lsh_threshold = _number(caption, "lsh_threshold", "dedup.caption")
    lsh = build(
        LshParams,
        {"threshold": lsh_threshold, **{k: caption.pop(k) for k in ("bands", "rows", "max_bucket") if k in caption}},
        "dedup.caption",
    )
    semantic = dict(caption.pop("semantic", None) or {})
    semantic_threshold = _number(semantic, "threshold", "dedup.caption.semantic") if "threshold" in semantic else None
    caption_semantic = build(CaptionSemanticParams, semantic, "dedup.caption.semantic")
    exact = v.pop("exact")
    if not isinstance(exact, bool):
        raise ConfigError(f"dedup.exact: expected true or false, got {exact!r}")
    rule = ClusterRule(
        image_threshold=_number(image, "threshold", "dedup.image"),
        caption_threshold=_number(caption, "threshold", "dedup.caption"),
        loose_image_threshold=_number(image, "loose_threshold", "dedup.image"),
        assign_margin=_number(image, "assign_margin", "dedup.image"),
        use_exact=exact,
        caption_semantic_threshold=(
            (SEMANTIC_THRESHOLD if semantic_threshold is None else semantic_threshold)
            if caption_semantic.enabled
            else None
        ),
    )
    embeddings = {name: image.pop(name, None) for name in ("embeddings", "embeddings_id")}
    index = build(IndexParams, image.pop("index"), "dedup.image.index")
    local = build(LocalParams, image.pop("local", None), "dedup.image.local")
    embedder = build(EmbedderParams, image, "dedup.image")
    if caption:
        raise ConfigError(f"unknown key(s) {', '.join('dedup.caption.' + k for k in sorted(caption))}")
    semdedup = build(SemDedupParams, v.pop("semdedup", None), "dedup.semdedup")
    return build(
        DedupParams,
        {
            "minhash": minhash,
            "lsh": lsh,
            "caption_semantic": caption_semantic,
            "embedder": embedder,
            "index": index,
            "local": local,
            "rule": rule,
            "semdedup": semdedup,
            "caption_enabled": caption_enabled,
            **embeddings,
            **v,
        },
        "dedup",
    )
