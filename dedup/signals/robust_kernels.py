"""Compiled per-pixel loops of the ``robust`` embedder (dedup/signals/robust.py).

Why by hand: the 3×3 median (PIL's rank filter, one image at a time) and the iterative border trim took
~0.5 ms per image in NumPy/PIL — more than decoding a small JPEG. The median is a vectorised exchange
network over a whole batch; the trim a compiled loop (single-threaded: the map stage already runs one
process per core).
"""

from __future__ import annotations

import numba
import numpy as np

# Devillard's median-of-9 exchange network (19 compare-exchanges; after it, p[4] is the median).
_MEDIAN9 = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
    (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)  # fmt: skip


def median3(images: np.ndarray) -> np.ndarray:
    """3×3 median of each (H, W) uint8 image of a batch (B, H, W); edges replicate the border pixel.
    An exchange network of element-wise minima and maxima over the nine shifted copies: a few
    vectorised passes over the batch instead of a sort per pixel."""
    height, width = images.shape[1:]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    p = [padded[:, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    for i, j in _MEDIAN9:
        p[i], p[j] = np.minimum(p[i], p[j]), np.maximum(p[i], p[j])
    return np.ascontiguousarray(p[4])


@numba.njit(cache=True)
def _span(counts: np.ndarray, mass: float) -> tuple[int, int]:
    """The shortest central run holding ``mass`` of ``counts``: (first, last + 1)."""
    total = counts.sum()
    low_target = total * (1.0 - mass) / 2.0
    high_target = total * (1.0 - (1.0 - mass) / 2.0)
    running = 0.0
    low, high = 0, len(counts)
    found_low = False
    for i in range(len(counts)):
        running += counts[i]
        if not found_low and running >= low_target:
            low = i
            found_low = True
        if running >= high_target:
            high = i + 1
            break
    return low, max(high, low + 1)


@numba.njit(cache=True)
def trim_box(rgb: np.ndarray, tolerance: int, mass: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels that differ from the border colour (per channel, the
    median of the four corners) by more than ``tolerance`` in some channel, ``mass`` of them per axis;
    found again inside the box (at most three times) until it stops shrinking: a letterbox's bars go
    first, then the image's own margin."""
    top, bottom, left, right = 0, rgb.shape[0], 0, rgb.shape[1]
    border = np.empty(3, np.int32)
    corners = np.empty(4, np.int32)
    for _ in range(3):
        h, w = bottom - top, right - left
        if h < 4 or w < 4:
            break
        for c in range(3):
            corners[0] = rgb[top, left, c]
            corners[1] = rgb[top, right - 1, c]
            corners[2] = rgb[bottom - 1, left, c]
            corners[3] = rgb[bottom - 1, right - 1, c]
            corners.sort()
            border[c] = (corners[1] + corners[2]) // 2
        rows = np.zeros(h, np.float64)
        cols = np.zeros(w, np.float64)
        any_differs = False
        for y in range(h):
            for x in range(w):
                for c in range(3):
                    if abs(np.int32(rgb[top + y, left + x, c]) - border[c]) > tolerance:
                        rows[y] += 1.0
                        cols[x] += 1.0
                        any_differs = True
                        break
        if not any_differs:
            break
        r0, r1 = _span(rows, mass)
        c0, c1 = _span(cols, mass)
        if r0 == 0 and r1 == h and c0 == 0 and c1 == w:
            break
        top, bottom, left, right = top + r0, top + r1, left + c0, left + c1
    return top, bottom, left, right
