"""The default ``robust`` embedder: copies under the nine edits match their originals, distinct emoji and
flat images of different levels do not, and its multi-view similarity is searched and scored alike."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from bench.edits import TRANSFORMS, edit
from memguard.corpus.twemoji import emoji_files, render
from memguard.dedup.decide.cluster import ClusterRule
from memguard.dedup.signals.embed import EmbedderParams, make_embedder, view_layout
from memguard.dedup.signals.neighbors import IndexParams, neighbor_pairs, planned_searches
from memguard.dedup.signals.robust import LAYOUT, LUMA, VIEW_DIM, VIEWS, RobustEmbedder
from memguard.dedup.signals.robust_kernels import luma_chroma, median3, trim_box
from memguard.dedup.signals.views import (
    SINGLE,
    ViewLayout,
    ViewPair,
    best_match,
    pair_similarity,
    similarity_matrix,
    view,
)

THRESHOLD = ClusterRule().image_threshold


@pytest.fixture(scope="module")
def emoji() -> list[np.ndarray]:
    files = emoji_files()
    picks = np.random.default_rng(7).choice(len(files), 40, replace=False)
    return [render(files[i], 64) for i in sorted(picks)]


def test_default_embedder_is_robust_with_unit_views(emoji: list[np.ndarray]) -> None:
    embedder = make_embedder(EmbedderParams())
    assert isinstance(embedder, RobustEmbedder) and view_layout("robust") == LAYOUT
    vectors = embedder.embed(emoji[:5])
    assert vectors.shape == (5, len(VIEWS) * VIEW_DIM) and np.isfinite(vectors).all()
    norms = np.linalg.norm(vectors.reshape(5, len(VIEWS), VIEW_DIM), axis=2)
    assert np.allclose(norms, 1, atol=1e-5)
    assert make_embedder(EmbedderParams()).embed([]).shape == (0, len(VIEWS) * VIEW_DIM)


def test_copies_under_each_edit_match_their_original(emoji: list[np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    embedder = RobustEmbedder()
    originals = embedder.embed(emoji)
    for name in TRANSFORMS:
        copies = embedder.embed([np.asarray(edit(rgb, name, rng).convert("RGB")) for rgb in emoji])
        found = pair_similarity(copies, originals, LAYOUT) >= THRESHOLD
        assert found.mean() >= 0.9, (name, found.mean())


def test_distinct_emoji_mostly_stay_apart(emoji: list[np.ndarray]) -> None:
    vectors = RobustEmbedder().embed(emoji)
    sims = similarity_matrix(vectors, vectors, LAYOUT)
    np.fill_diagonal(sims, -1)
    assert (sims.max(axis=1) >= THRESHOLD).mean() <= 0.15  # skin tones and mirrored drawings are look-alikes


def test_flat_images_of_different_levels_and_colours_stay_apart() -> None:
    flat = [
        np.full((32, 32, 3), v, np.uint8)
        for v in ((255, 255, 255), (128,) * 3, (0, 0, 0), (200, 30, 30), (30, 30, 200))
    ]
    vectors = RobustEmbedder().embed(flat)
    sims = similarity_matrix(vectors, vectors, LAYOUT)
    np.fill_diagonal(sims, -1)
    assert np.isfinite(vectors).all() and sims.max() < THRESHOLD


def test_grey_copy_matches_its_original_but_colour_variants_stay_apart(emoji: list[np.ndarray]) -> None:
    shape = np.full((64, 64, 3), 255, np.uint8)
    shape[16:48, 16:48] = (220, 40, 40)
    blue = shape.copy()
    blue[16:48, 16:48] = (40, 40, 220)
    grey = np.asarray(Image.fromarray(shape).convert("L").convert("RGB"))
    red_v, blue_v, grey_v = RobustEmbedder().embed([shape, blue, grey])
    assert pair_similarity(grey_v[None], red_v[None], LAYOUT)[0] >= THRESHOLD
    assert pair_similarity(red_v[None], blue_v[None], LAYOUT)[0] < THRESHOLD


def test_view_similarity_functions_agree() -> None:
    rng = np.random.default_rng(0)
    layout = ViewLayout(count=3, pairs=(ViewPair(0, 0), ViewPair(1, 0), ViewPair(2, 0, gate=(0, 2))))
    rows = rng.normal(size=(6, 3, 4))
    rows[3, 2] = rows[3, 0]  # sample 3's gate is open
    rows /= np.linalg.norm(rows, axis=2, keepdims=True)
    x = rows.reshape(6, 12).astype(np.float32)
    full = similarity_matrix(x, x, layout)
    assert np.allclose(full, full.T)
    i, j = np.triu_indices(6, 1)
    assert np.allclose(pair_similarity(x[i], x[j], layout), full[i, j])
    # By hand for one pair: the gated pair counts only towards the sample whose gate is open.
    a, b = rows[0], rows[3]
    expected = max(a[0] @ b[0], a[1] @ b[0], b[1] @ a[0], a[2] @ b[0])
    assert np.isclose(full[0, 3], expected)
    assert np.allclose(similarity_matrix(x[:, :4], x[:, :4], SINGLE), x[:, :4] @ x[:, :4].T)
    sims, idx = best_match(x, x[::-1].copy(), layout, block=2)
    reference = similarity_matrix(x, x[::-1].copy(), layout)
    assert np.allclose(sims, reference.max(axis=1)) and (reference[np.arange(6), idx] == sims).all()


def _pictures(count: int, seed: int) -> list[np.ndarray]:
    """Smooth random pictures filling the frame: nothing to trim, all in colour."""
    rng = np.random.default_rng(seed)
    return [
        np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((64, 64), Image.BICUBIC))
        for _ in range(count)
    ]


def test_multi_view_neighbour_pairs_equal_exhaustive_search(emoji: list[np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    originals = emoji[:12] + _pictures(12, 2)
    edits = ("flip", "crop80", "grey", "letterbox15")
    images = originals + [np.asarray(edit(rgb, name, rng).convert("RGB")) for rgb in originals for name in edits]
    vectors = RobustEmbedder().embed(images)
    searches = planned_searches(vectors, LAYOUT)
    query_rows = {(b, a): len(images) if rows is None else len(rows) for b, _, _, a, rows in searches}
    trim, grey = VIEWS.index("trim"), VIEWS.index("grey")
    assert 0 < query_rows[trim, trim] < len(images) and 0 < query_rows[0, grey] < len(images)  # both skip rows
    params = IndexParams(kind="flat", k=len(images), min_sim=0.9)
    pairs, sims = neighbor_pairs(vectors, params, LAYOUT)
    full = similarity_matrix(vectors, vectors, LAYOUT)
    i, j = np.triu_indices(len(images), 1)
    expected = {(a, b) for a, b in zip(i, j, strict=True) if full[a, b] >= 0.9}
    assert {tuple(p) for p in pairs.tolist()} == expected
    assert np.allclose(sims, full[pairs[:, 0], pairs[:, 1]], atol=1e-5)


def test_median3_is_the_3x3_median_with_replicated_edges() -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 9, 7)).astype(np.uint8)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    expected = np.array(
        [[[np.median(padded[b, y : y + 3, x : x + 3]) for x in range(7)] for y in range(9)] for b in range(3)]
    )
    assert (median3(images) == expected).all()
    interior = np.asarray(Image.fromarray(images[0]).filter(ImageFilter.MedianFilter(3)))
    assert (median3(images)[0][1:-1, 1:-1] == interior[1:-1, 1:-1]).all()


def test_luma_chroma_is_the_rounded_luminance_and_the_colour_differences() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 300, 3)).astype(np.uint8)
    grey, chroma = luma_chroma(rgb, LUMA)
    luma = rgb.astype(np.float64) @ LUMA.astype(np.float64)
    assert np.abs(grey.astype(np.float64) - np.clip(np.rint(luma), 0, 255)).max() <= 1  # float32 rounding at .5
    assert np.allclose(chroma[0].T, rgb[..., 0] - luma, atol=1e-4)
    assert np.allclose(chroma[1].T, rgb[..., 2] - luma, atol=1e-4)
    alone, _ = luma_chroma(rgb[2:3], LUMA)
    assert (alone == grey[2:3]).all()  # a pixel's value does not depend on the batch around it


def test_embedding_does_not_depend_on_the_batch_and_untrimmed_images_trim_to_their_base(
    emoji: list[np.ndarray],
) -> None:
    pictures = _pictures(5, 3)
    boxed = np.zeros((64, 64, 3), np.uint8)
    boxed[8:56] = np.asarray(Image.fromarray(pictures[0]).resize((64, 48)))
    images = [*pictures, boxed, emoji[0], np.asarray(Image.fromarray(emoji[1]).resize((40, 72)))]
    together = RobustEmbedder().embed(images)
    apart = np.concatenate([RobustEmbedder().embed([image]) for image in images])
    assert (together == apart).all()
    base, trim = (view(together, LAYOUT, VIEWS.index(name)) for name in ("base", "trim"))
    assert (trim[:5] == base[:5]).all()
    assert float(trim[5] @ base[0]) > 0.95 > float(base[5] @ base[0])  # the letterbox's trim view is its picture


def test_trim_box_removes_letterbox_bars_then_the_margin() -> None:
    content = np.full((40, 40, 3), 255, np.uint8)
    content[10:30, 8:32] = (10, 120, 200)
    boxed = np.zeros((60, 40, 3), np.uint8)
    boxed[10:50] = content
    assert trim_box(content, 12, 0.99) == (10, 30, 8, 32)
    assert trim_box(boxed, 12, 0.99) == (20, 40, 8, 32)
    flat = np.full((16, 16, 3), 90, np.uint8)
    assert trim_box(flat, 12, 0.99) == (0, 16, 0, 16)
