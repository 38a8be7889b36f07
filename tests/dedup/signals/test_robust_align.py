"""The robust embedder's alignment refinement: re-crops of a few pixels per side (the built-in corpus's
injected copies) match their originals once aligned, the coordinate ascent finds what an exhaustive
search over every window finds, and pairs below the floor are left as they were."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from memguard.corpus.twemoji import emoji_files, render
from memguard.dedup.decide.cluster import ClusterRule
from memguard.dedup.signals.robust import (
    ALIGN_FLOOR,
    ALIGN_STEP,
    ALIGN_STEPS,
    CHROMA_GRID,
    GRID,
    LAYOUT,
    VIEW_DIM,
    RobustEmbedder,
)
from memguard.dedup.signals.robust_align import aligned_similarity, window_taps
from memguard.dedup.signals.views import pair_similarity, similarity_matrix

THRESHOLD = ClusterRule().image_threshold
UNREFINED = replace(LAYOUT, refine=None)


def _aligned(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return aligned_similarity(x, y, side=GRID, chroma_side=CHROMA_GRID, step=ALIGN_STEP, steps=ALIGN_STEPS)


def _recrop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The injector's re-crop (memguard/corpus/inject.py): ``box`` pixels off each side, resized back."""
    left, top, right, bottom = box
    h, w = rgb.shape[:2]
    image = Image.fromarray(rgb).crop((left, top, w - right, h - bottom))
    return np.asarray(image.resize((w, h), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    """40 emoji at 32 px and one re-crop of each (0–2 px per side, at least 3 px in all): robust vectors."""
    files = emoji_files()
    rng = np.random.default_rng(11)
    originals, copies = [], []
    for i in sorted(rng.choice(len(files), 40, replace=False)):
        rgb = render(files[i], 32)
        box = (0, 0, 0, 0)
        while sum(box) < 3:
            box = tuple(int(v) for v in rng.integers(0, 3, size=4))  # type: ignore[assignment]
        originals.append(rgb)
        copies.append(_recrop(rgb, box))
    embedder = RobustEmbedder()
    return embedder.embed(originals), embedder.embed(copies)


def test_recrops_match_their_originals_once_aligned(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    originals, copies = pairs
    unrefined = pair_similarity(copies, originals, UNREFINED)
    refined = pair_similarity(copies, originals, LAYOUT)
    assert (unrefined >= THRESHOLD).mean() <= 0.6  # what the fixed views alone find
    assert (refined >= THRESHOLD).mean() >= 0.9
    assert (refined >= unrefined).all()


def test_distinct_emoji_stay_apart_after_alignment(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    originals, _ = pairs
    sims = similarity_matrix(originals, originals, LAYOUT)
    np.fill_diagonal(sims, -1)
    assert (sims.max(axis=1) >= THRESHOLD).mean() <= 0.15


def test_pair_and_matrix_similarity_agree_with_refinement(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    originals, copies = pairs
    matrix = similarity_matrix(copies, originals, LAYOUT)
    for i in range(len(copies)):
        row = pair_similarity(np.repeat(copies[i : i + 1], len(originals), axis=0), originals, LAYOUT)
        assert np.allclose(matrix[i], row, atol=1e-6)


def test_pairs_below_the_floor_are_not_refined(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    originals, copies = pairs
    unrefined = similarity_matrix(copies, originals, UNREFINED)
    refined = similarity_matrix(copies, originals, LAYOUT)
    below = unrefined < ALIGN_FLOOR
    assert below.any() and np.array_equal(refined[below], unrefined[below])
    assert (refined[~below] >= unrefined[~below]).all()


def _exhaustive(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The window similarity maximised over every (row, column) window pair, both ways, in numpy."""
    first, weight, _ = window_taps(GRID, ALIGN_STEP, ALIGN_STEPS)
    chroma_first, chroma_weight, _ = window_taps(CHROMA_GRID, ALIGN_STEP, ALIGN_STEPS)

    def matrices(f: np.ndarray, w: np.ndarray, side: int) -> np.ndarray:
        m = np.zeros((len(f), side, side))
        rows = np.arange(side)
        for k in range(len(f)):
            m[k, rows, f[k]] += 1 - w[k]
            m[k, rows, f[k] + 1] += w[k]
        return m

    big, small = matrices(first, weight, GRID), matrices(chroma_first, chroma_weight, CHROMA_GRID)
    cells, chroma_cells = GRID * GRID, CHROMA_GRID * CHROMA_GRID

    def one_way(a: np.ndarray, b: np.ndarray) -> float:
        scale = np.linalg.norm(a[:cells])
        s = (a[:cells] / scale).reshape(GRID, GRID)
        c = (a[cells : cells + 2 * chroma_cells] / scale).reshape(2, CHROMA_GRID, CHROMA_GRID)
        tail = a[cells + 2 * chroma_cells :] / scale
        best = -np.inf
        for wy in range(len(big)):
            for wx in range(len(big)):
                t = big[wy] @ s @ big[wx].T
                t = (t - t.mean()).ravel()
                t /= np.linalg.norm(t)
                ch = np.stack([small[wy] @ c[k] @ small[wx].T for k in range(2)]).ravel()
                v = np.concatenate([t, ch, tail])
                best = max(best, float(v @ b / np.linalg.norm(v)))
        return best

    return np.array([max(one_way(a, b), one_way(b, a)) for a, b in zip(x, y, strict=True)])


def test_coordinate_ascent_finds_the_exhaustive_optimum(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    originals, copies = pairs
    x, y = copies[:12, :VIEW_DIM].astype(np.float64), originals[:12, :VIEW_DIM].astype(np.float64)
    fast, full = _aligned(x, y), _exhaustive(x, y)
    assert (fast <= full + 1e-5).all()  # every value is one window's similarity
    assert np.abs(fast - full).max() <= 2e-3


def test_identity_window_is_the_plain_cosine_and_the_similarity_is_symmetric(
    pairs: tuple[np.ndarray, np.ndarray],
) -> None:
    originals, copies = pairs
    x, y = copies[:, :VIEW_DIM], originals[:, :VIEW_DIM]
    plain = np.einsum("ij,ij->i", x, y)
    aligned = _aligned(x, y)
    assert (aligned >= plain - 1e-5).all()
    assert np.allclose(aligned, _aligned(y, x))
    assert np.allclose(_aligned(x, x), 1.0, atol=1e-5)


def test_flat_views_have_no_alignment_and_wrong_shapes_are_refused() -> None:
    flat = RobustEmbedder().embed([np.full((32, 32, 3), 200, np.uint8)] * 2)[:, :VIEW_DIM]
    assert np.isneginf(_aligned(flat, flat)).all()
    with pytest.raises(ValueError, match="do not fit"):
        _aligned(np.zeros((2, 10), np.float32), np.zeros((2, 10), np.float32))
