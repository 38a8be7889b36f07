"""Plain dicts (what Hydra composes, after ``OmegaConf.to_container``) → the typed parameters.

The YAML speaks the user's vocabulary (``dedup.caption.threshold``); the library takes dataclasses.
Unknown keys are errors, so a typo in an override never silently does nothing.
"""

from __future__ import annotations

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
    semantic_threshold = semantic.pop("threshold", 0.9)
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
