"""The optional caption-embedding signal: the real MiniLM, the rule clause, the cached pipeline steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memguard.common.cache import Cache
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.dedup.decide.cluster import ClusterRule, PairScorer, cluster, merge_candidates
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.dedup.signals.caption_embed import CaptionSemanticParams, embed_captions
from tests.conftest import TINY_TWEMOJI


def test_minilm_embeds_meaning_and_skips_unusable_captions() -> None:
    captions = ["red heart", "a heart coloured red", "waving hand dark skin tone", ""]
    usable = np.array([True, True, True, False])
    vectors = embed_captions(captions, usable, CaptionSemanticParams(enabled=True))
    assert vectors.shape == (4, 384) and np.isnan(vectors[3]).all()
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1, atol=1e-4)
    close, far = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert close > 0.7 and far < close - 0.3


def _two_samples(caption_cosine: float) -> tuple[np.ndarray, np.ndarray, PairScorer]:
    angle = np.deg2rad(30)  # image cosine 0.87: above the loose threshold, below the strict one
    emb = np.array([[1, 0], [np.cos(angle), np.sin(angle)]], np.float32)
    cap_angle = np.arccos(caption_cosine)
    cap = np.array([[1, 0], [np.cos(cap_angle), np.sin(cap_angle)]], np.float32)
    sig = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.uint32)  # disjoint captions for MinHash
    scorer = PairScorer(emb, sig, np.ones(2, bool), np.arange(2), cap)
    return emb, cap, scorer


@pytest.mark.parametrize(
    ("cosine", "threshold", "joined"), [(0.95, 0.9, True), (0.85, 0.9, False), (0.95, None, False)]
)
def test_semantic_clause_needs_its_threshold_and_the_loose_image_match(
    cosine: float, threshold: float | None, joined: bool
) -> None:
    emb, cap, scorer = _two_samples(cosine)
    edges = merge_candidates(
        2,
        embeddings=emb,
        image_pairs=np.zeros((0, 2), int),
        image_sims=np.zeros(0),
        caption_pairs=np.zeros((0, 2), int),
        caption_jaccard=np.zeros(0),
        exact_groups=np.arange(2),
        caption_embeddings=cap,
        semantic_pairs=np.array([[0, 1]]),
    )
    assert abs(edges.caption_sim[0] - cosine) < 1e-5 and np.isnan(edges.caption_jaccard[0])
    rule = ClusterRule(caption_semantic_threshold=threshold)
    found = cluster(2, edges, rule=rule, rank=np.arange(2), scorer=scorer)
    assert (found.labels[0] == found.labels[1]) == joined
    if joined:
        assert found.signal[1] == "caption_semantic+image"


def test_pipeline_with_semantic_signal_caches_and_evaluates(cache_dir: Path, tmp_path: Path) -> None:
    corpus = open_corpus(CorpusSpec(twemoji=TINY_TWEMOJI), cache_dir)
    params = DedupParams(
        caption_semantic=CaptionSemanticParams(enabled=True),
        rule=ClusterRule(caption_semantic_threshold=0.9),
        write_shards=False,
    )
    cache = Cache(tmp_path)
    first = run_dedup(corpus, params, out_dir=tmp_path / "a", cache=cache)
    assert {"caption_embeddings", "caption_neighbors"} <= set(first.stats["cache"]["misses"])  # type: ignore[index]
    injected = first.stats["evaluation"]["injected"]  # type: ignore[index]
    assert injected["recall"] >= 0.9 and injected["precision"] >= 0.9
    sweep = DedupParams(
        caption_semantic=CaptionSemanticParams(enabled=True),
        rule=ClusterRule(caption_semantic_threshold=0.95),
        write_shards=False,
    )
    cache2 = Cache(tmp_path)
    run_dedup(corpus, sweep, out_dir=tmp_path / "b", cache=cache2)
    assert not cache2.misses and {"caption_embeddings", "caption_neighbors"} <= set(cache2.hits)
    with pytest.raises(ValueError, match="floor"):
        DedupParams(
            caption_semantic=CaptionSemanticParams(enabled=True), rule=ClusterRule(caption_semantic_threshold=0.5)
        )
    with pytest.raises(ValueError, match="enabled"):
        DedupParams(rule=ClusterRule(caption_semantic_threshold=0.9))
