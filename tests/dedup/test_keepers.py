"""The kept set is clean by construction: no two kept samples match, no duplicate survives, no chains."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from memguard.common.cache import Cache
from memguard.corpus.readers import read_shards
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.validate import decode_image
from memguard.dedup.decide.cluster import ClusterRule, PairScorer, _accept, cluster, merge_candidates
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from tests.conftest import TINY_TWEMOJI, add_member, encode


@st.composite
def graphs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    # Few directions plus small noise: many near pairs, look-alike chains, some exact twins.
    centres = rng.normal(size=(draw(st.integers(1, 6)), 6))
    emb = centres[rng.integers(0, len(centres), n)] + draw(st.sampled_from([0.01, 0.05, 0.15])) * rng.normal(
        size=(n, 6)
    )
    twins = rng.random(n) < 0.2
    emb[twins] = emb[0]
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    exact = np.arange(n)
    exact[twins] = 0
    sig = rng.integers(0, 3, (n, 8)).astype(np.uint32)  # captions that sometimes agree
    # Candidates: a random subset of all pairs (the candidate search misses some).
    all_pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)])
    keep = rng.random(len(all_pairs)) < draw(st.sampled_from([0.3, 0.7, 1.0]))
    return emb, exact, sig, all_pairs[keep], rng.permutation(n)


@settings(max_examples=200, deadline=None)
@given(graphs(), st.sampled_from([0.9, 0.98]), st.sampled_from([0.0, 0.01, 2.0]))
def test_kept_set_invariants_on_random_graphs(graph, image_threshold: float, margin: float) -> None:  # type: ignore[no-untyped-def]
    emb, exact, sig, pairs, rank = graph
    n = len(emb)
    rule = ClusterRule(
        image_threshold=image_threshold, caption_threshold=0.7, loose_image_threshold=0.8, assign_margin=margin
    )
    sims = np.einsum("ij,ij->i", emb[pairs[:, 0]], emb[pairs[:, 1]]) if len(pairs) else np.zeros(0)
    jac = (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1) if len(pairs) else np.zeros(0)
    edges = merge_candidates(
        n,
        embeddings=emb,
        image_pairs=pairs,
        image_sims=sims,
        caption_pairs=pairs,
        caption_jaccard=jac,
        exact_groups=exact,
    )
    scorer = PairScorer(emb, sig, np.ones(n, bool), exact)
    found = cluster(n, edges, rule=rule, rank=rank, scorer=scorer)
    kept = found.keeper == np.arange(n)
    # No two kept samples meet the rule on a candidate edge, and none share their pixels.
    both = kept[edges.pairs[:, 0]] & kept[edges.pairs[:, 1]]
    for i, j in edges.pairs[both]:
        assert _accept(scorer(int(i), np.array([j])), rule)[0] < 0, (i, j)
    assert len(np.unique(exact[kept])) == kept.sum()
    # Every removed sample matches its keeper directly, and that keeper is kept (no chains); of the kept
    # samples of its component that it matches, its keeper is the best (exact pixels, else most similar)
    # up to the assignment margin.
    _, component = connected_components(
        coo_matrix((np.ones(len(found.edges.pairs)), tuple(found.edges.pairs.T)), shape=(n, n)), directed=False
    )
    for i in np.flatnonzero(~kept):
        k = found.keeper[i]
        assert kept[k] and _accept(scorer(int(i), np.array([k])), rule)[0] >= 0
        assert found.labels[i] == found.labels[k]
        rivals = np.flatnonzero(kept & (component == component[i]))
        codes = _accept(scorer(int(i), rivals), rule)
        rivals = rivals[codes >= 0]
        if exact[i] != exact[k]:
            assert not (exact[rivals] == exact[i]).any()
            assert emb[k] @ emb[i] >= (emb[rivals] @ emb[i]).max() - margin - 1e-6
    assert (np.bincount(found.labels)[found.labels] == found.size).all()


def _png(rgb: np.ndarray, side: int | None = None) -> bytes:
    image = Image.fromarray(rgb)
    if side is not None:
        image = image.resize((side, side), Image.Resampling.LANCZOS)
    return encode(image, "PNG")


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((64, 64), Image.Resampling.BICUBIC))


def _dedup_tar(tmp_path: Path, members: list[tuple[str, bytes, str]]) -> list[dict[str, object]]:
    shard = tmp_path / "shards" / "part-0.tar"
    shard.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(shard, "w") as tar:
        for key, image, caption in members:
            add_member(tar, f"{key}.png", image)
            add_member(tar, f"{key}.txt", caption.encode())
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(shard)), tmp_path / "cache")
    result = run_dedup(corpus, DedupParams(), out_dir=tmp_path / "out", cache=Cache(tmp_path / "cache"))
    return pq.read_table(result.manifest).to_pylist()


def test_aliases_keep_exactly_one_of_each_identical_group(tmp_path: Path) -> None:
    """Icon themes publish one drawing under several names, each also at other sizes: the aliases' own
    resized look-alikes pull them into different neighbourhoods, yet one copy of the pixels stays."""
    members = []
    rng = np.random.default_rng(0)
    for base in range(6):
        rgb = _texture(base)
        for alias in range(3):
            name = f"icon{base}-alias{alias}"
            members.append((f"{name}-64", _png(rgb), f"{name} application"))
            for side in (48, 40, 32):  # each name's own renderings at other sizes: alike, not identical
                noisy = np.clip(rgb.astype(int) + rng.integers(-40, 41, rgb.shape), 0, 255).astype(np.uint8)
                members.append((f"{name}-{side}", _png(noisy, side), f"{name} application"))
    rows = _dedup_tar(tmp_path, members)
    kept = [r["key"] for r in rows if r["status"] == "kept"]
    for base in range(6):
        identical = [k for k in kept if k.startswith(f"icon{base}-") and k.endswith("-64")]
        assert len(identical) == 1, (base, identical)


def test_flat_images_of_different_brightness_or_colour_are_all_kept(tmp_path: Path) -> None:
    flats = {"white": 255, "grey": 128, "black": 0, "nearly_grey": 127}
    members = [(k, _png(np.full((32, 32, 3), v, np.uint8)), f"a flat {k} square") for k, v in flats.items()]
    members.append(("red", _png(np.tile(np.array([200, 30, 30], np.uint8), (32, 32, 1))), "a flat red square"))
    rows = {str(r["key"]): r for r in _dedup_tar(tmp_path, members)}
    assert sorted(k for k, r in rows.items() if r["status"] == "kept") == ["black", "grey", "red", "white"]
    # Grey 127 is grey 128 to the eye: it may join grey, never black (the old embedder put it with black).
    assert rows["nearly_grey"]["duplicate_of"] in ("", "grey")


def test_builtin_corpus_keeps_no_two_identical_images(cache_dir: Path, tmp_path: Path) -> None:
    corpus = open_corpus(CorpusSpec(twemoji=TINY_TWEMOJI), cache_dir)
    result = run_dedup(corpus, DedupParams(shard_size=1000), out_dir=tmp_path, cache=Cache(cache_dir))
    hashes = [decode_image(s.image).tobytes() for s in read_shards(str(result.shards))]
    assert len(hashes) == len(set(hashes)) == result.stats["kept_samples"]
    rows = pq.read_table(result.manifest).to_pylist()
    kept = {r["key"] for r in rows if r["status"] == "kept"}
    assert all(r["duplicate_of"] in kept for r in rows if r["status"] == "duplicate")
