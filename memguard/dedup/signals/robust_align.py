"""Alignment-tolerant similarity of two ``robust`` base views: a copy cropped by a few pixels per side
and resized back (a scraper's re-crop, a thumbnail's trimmed border) is a zoom of up to ~14% with a
shift of up to a grid cell, beyond what the fixed views meet; the base grid of one image is resampled
through small axis-aligned windows until it best matches the other's.

A window is an interval [start, end] of the image side per axis, with start and end each moved by up
to ``steps`` × ``step`` of the side (negative start and end beyond 1 look past the edge, which repeats
the edge cells: a copy of a copy may show more of the original on one side). The best window is found
by coordinate ascent — all row windows with the column window fixed, then all column windows, twice,
from the identity — instead of all (2·steps + 1)⁴ window pairs: the row and column windows barely
interact, and a test checks the result against the exhaustive search.

The similarity of a window is the cosine of the resampled view, built as the embedder builds a view
(unit structure, chroma, level terms, then unit norm), with the other image's view. Both directions
are tried. Structure terms of a row sweep come from a cross-Gram matrix computed once per sweep, so a
window costs ~100 operations instead of resampling 16² cells.

Why by hand: no installed library registers two tiny descriptor grids under a scale-and-shift model
in a compiled loop over 10^5–10^7 candidate pairs (scikit-image's registration is translation-only and
per image; OpenCV's ECC is not a dependency and works on full images).
"""

from __future__ import annotations

from functools import cache

import numba
import numpy as np

TAIL = 4  # level and brightness terms at the end of a view (memguard/dedup/signals/robust.py: _vectors)


@cache
def window_taps(side: int, step: float, steps: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Bilinear taps of every window on a ``side``-cell axis: (first cell (W, side) int64, weight of
    the next cell (W, side) float64, index of the identity window)."""
    offsets = np.arange(-steps, steps + 1) * step
    windows = [(a, 1.0 + b) for a in offsets for b in offsets]
    first, weight = [], []
    for start, end in windows:
        centres = start + (np.arange(side) + 0.5) / side * (end - start)
        x = np.clip(centres * side - 0.5, 0, side - 1)
        x0 = np.minimum(np.floor(x).astype(np.int64), side - 2)
        first.append(x0)
        weight.append(x - x0)
    identity = steps * (2 * steps + 1) + steps
    return np.array(first), np.array(weight), identity


@numba.njit(cache=True)
def _resample_rows(grid: np.ndarray, first: np.ndarray, weight: np.ndarray) -> np.ndarray:
    out = np.empty_like(grid)
    for i in range(grid.shape[0]):
        f = weight[i]
        out[i] = (1.0 - f) * grid[first[i]] + f * grid[first[i] + 1]
    return out


@numba.njit(cache=True)
def _transposed(grids: np.ndarray) -> np.ndarray:
    """(c, n, n) → each grid transposed, contiguous."""
    out = np.empty_like(grids)
    for c in range(grids.shape[0]):
        out[c] = grids[c].T
    return out


@numba.njit(cache=True)
def _chroma_sweep(  # noqa: PLR0917 (a numba kernel: nopython mode compiles positional parameters only)
    grids: np.ndarray, target: np.ndarray, first: np.ndarray, weight: np.ndarray, terms: np.ndarray
) -> None:
    """terms[w] = (dot with the target, squared norm) of the chroma ``grids`` (already resampled along
    axis 2) resampled along axis 1 through each window ``w``."""
    channels, side = grids.shape[0], grids.shape[1]
    for w in range(first.shape[0]):
        dot, sq = 0.0, 0.0
        for c in range(channels):
            for i in range(side):
                k, f = first[w, i], weight[w, i]
                for j in range(side):
                    v = (1.0 - f) * grids[c, k, j] + f * grids[c, k + 1, j]
                    dot += v * target[c, i, j]
                    sq += v * v
        terms[w, 0], terms[w, 1] = dot, sq


@numba.njit(cache=True)
def _sweep(  # noqa: PLR0917 (a numba kernel: nopython mode compiles positional parameters only)
    grid: np.ndarray,
    target: np.ndarray,
    first: np.ndarray,
    weight: np.ndarray,
    chroma_terms: np.ndarray,
    fixed_norm: float,
    fixed_dot: float,
) -> tuple[int, float]:
    """Best window along axis 0 of ``grid`` (already resampled along axis 1) against ``target``:
    (window, similarity). ``chroma_terms`` (W, 2): each window's chroma dot and squared norm;
    ``fixed_*``: the level terms' squared norm and dot, the same for every window."""
    side = grid.shape[0]
    cross = grid @ target.T  # cross[k, i] = row k of the grid · row i of the target
    diag = np.empty(side)
    off = np.empty(side)
    sums = np.empty(side)
    for k in range(side):
        diag[k] = np.sum(grid[k] * grid[k])
        off[k] = np.sum(grid[k] * grid[k + 1]) if k + 1 < side else 0.0
        sums[k] = np.sum(grid[k])
    target_sum = np.sum(target)
    best, best_window = -np.inf, 0
    for w in range(first.shape[0]):
        dot, sq, total = 0.0, 0.0, 0.0
        for i in range(side):
            k, f = first[w, i], weight[w, i]
            dot += (1.0 - f) * cross[k, i] + f * cross[k + 1, i]
            sq += (1.0 - f) ** 2 * diag[k] + 2.0 * f * (1.0 - f) * off[k] + f * f * diag[k + 1]
            total += (1.0 - f) * sums[k] + f * sums[k + 1]
        mean = total / (side * side)
        spread = sq - side * side * mean * mean
        if spread <= 1e-12:
            continue
        structure = (dot - mean * target_sum) / np.sqrt(spread)  # the unit structure's dot with the target
        value = (structure + chroma_terms[w, 0] + fixed_dot) / np.sqrt(1.0 + chroma_terms[w, 1] + fixed_norm)
        if value > best:
            best, best_window = value, w
    return best_window, best


@numba.njit(cache=True)
def _one_way(  # noqa: PLR0917 (a numba kernel: nopython mode compiles positional parameters only)
    a: np.ndarray,
    b: np.ndarray,
    side: int,
    chroma_side: int,
    taps: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    identity: int,
    sweeps: int,
) -> float:
    """Best similarity of view ``a`` resampled through a window with view ``b`` (-inf for a flat ``a``)."""
    first, weight, chroma_first, chroma_weight = taps
    cells = side * side
    scale = np.sqrt(np.sum(a[:cells] ** 2))  # the structure part has unit norm before the view's scaling
    if scale < 1e-6:
        return -np.inf
    structure = (a[:cells] / scale).reshape(side, side)
    target = b[:cells].reshape(side, side)
    n_chroma = 2 * chroma_side * chroma_side
    chroma = (a[cells : cells + n_chroma] / scale).reshape(2, chroma_side, chroma_side)
    chroma_target = b[cells : cells + n_chroma].reshape(2, chroma_side, chroma_side)
    tail = a[cells + n_chroma :] / scale
    fixed_dot = np.sum(tail * b[cells + n_chroma :])
    fixed_norm = np.sum(tail * tail)
    windows = first.shape[0]
    terms = np.empty((windows, 2))
    wy, wx, best = identity, identity, -np.inf
    # Column windows resample the transposed grids' rows: transposed once here, not in every sweep.
    structure_t, target_t = structure.T.copy(), target.T.copy()
    chroma_t, chroma_target_t = _transposed(chroma), _transposed(chroma_target)
    for _ in range(sweeps):
        # rows, with the column window fixed
        columns = _resample_rows(structure_t, first[wx], weight[wx]).T.copy()
        chroma_columns = np.empty_like(chroma)
        for c in range(2):
            chroma_columns[c] = _resample_rows(chroma_t[c], chroma_first[wx], chroma_weight[wx]).T
        _chroma_sweep(chroma_columns, chroma_target, chroma_first, chroma_weight, terms)
        wy, best = _sweep(columns, target, first, weight, terms, fixed_norm, fixed_dot)
        # columns, with the row window fixed: the same sweep on the transposed grids
        rows = _resample_rows(structure, first[wy], weight[wy])
        chroma_rows = np.empty_like(chroma)
        for c in range(2):
            chroma_rows[c] = _resample_rows(chroma[c], chroma_first[wy], chroma_weight[wy]).T
        _chroma_sweep(chroma_rows, chroma_target_t, chroma_first, chroma_weight, terms)
        wx, best = _sweep(rows.T.copy(), target_t, first, weight, terms, fixed_norm, fixed_dot)
    return best


@numba.njit(parallel=True, cache=True)
def _aligned(  # noqa: PLR0917 (a numba kernel: nopython mode compiles positional parameters only)
    x: np.ndarray,
    y: np.ndarray,
    side: int,
    chroma_side: int,
    taps: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    identity: int,
    sweeps: int,
    out: np.ndarray,
) -> None:
    for p in numba.prange(len(x)):
        a, b = x[p].astype(np.float64), y[p].astype(np.float64)
        out[p] = max(
            _one_way(a, b, side, chroma_side, taps, identity, sweeps),
            _one_way(b, a, side, chroma_side, taps, identity, sweeps),
        )


def aligned_similarity(
    x: np.ndarray, y: np.ndarray, *, side: int, chroma_side: int, step: float, steps: int, sweeps: int = 2
) -> np.ndarray:
    """Similarity of ``x[i]`` and ``y[i]`` (robust base views, (m, side² + 2·chroma_side² + 4)) under
    the best window of either over the other: (m,) float32; -inf where both are flat (no structure)."""
    if x.shape != y.shape or x.shape[-1] != side * side + 2 * chroma_side * chroma_side + TAIL:
        raise ValueError(f"aligned_similarity: views of shape {x.shape} and {y.shape} do not fit the grids")
    first, weight, identity = window_taps(side, step, steps)
    chroma_first, chroma_weight, _ = window_taps(chroma_side, step, steps)
    out = np.empty(len(x), np.float64)
    if len(x):
        _aligned(
            np.ascontiguousarray(x, np.float32),
            np.ascontiguousarray(y, np.float32),
            side,
            chroma_side,
            (first, weight, chroma_first, chroma_weight),
            identity,
            sweeps,
            out,
        )
    return out.astype(np.float32)
