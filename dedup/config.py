"""Plain dicts (what Hydra composes, after ``OmegaConf.to_container``) → the typed parameters.

The YAML speaks the user's vocabulary (``dedup.caption.threshold``); the library takes dataclasses.
Unknown keys are errors, so a typo in an override never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from dedup.builtin import TwemojiConfig
from dedup.caption_embed import CaptionSemanticParams
from dedup.cluster import ClusterRule
from dedup.corpus import CorpusSpec
from dedup.embed import EmbedderParams
from dedup.lsh import LshParams
from dedup.minhash import MinHashParams
from dedup.neighbors import IndexParams
from dedup.pipeline import DedupParams
from dedup.semdedup import SemDedupParams
from dedup.validate import Limits

T = TypeVar("T")


def build(cls: type[T], values: dict[str, Any] | None) -> T:
    """Instantiate a (nested) frozen dataclass from a dict, rejecting unknown keys."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {sorted(unknown)}; known: {sorted(names)}")
    for name, value in list(values.items()):
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            values[name] = build(hint, value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


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
