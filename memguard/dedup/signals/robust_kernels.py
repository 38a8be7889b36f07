"""Compiled per-pixel loops of the ``robust`` embedder (memguard/dedup/signals/robust.py).

Why by hand: the 3×3 median (PIL's rank filter, one image at a time), the iterative border trim and the
luminance/chroma split took ~0.5 ms per image in NumPy/PIL — more than decoding a small JPEG. Each is a
compiled loop (single-threaded: the map stage already runs one process per core).
"""

from __future__ import annotations

import numba
import numpy as np

_TILE = 16  # pixels per tile of luma_chroma's transposed writes


@numba.njit(cache=True)
def median3(images: np.ndarray) -> np.ndarray:
    """3×3 median of each (H, W) uint8 image of a batch (B, H, W); edges replicate the border pixel.
    Devillard's exchange network on the nine neighbours of a pixel, held in registers; with the edges
    padded first the row loop has no branches, and LLVM vectorises it across pixels (~17× faster than
    the same network as NumPy passes over shifted copies of the batch)."""
    batch, height, width = images.shape
    padded = np.empty((height + 2, width + 2), np.uint8)
    out = np.empty_like(images)
    for n in range(batch):
        padded[1 : height + 1, 1 : width + 1] = images[n]
        padded[0, 1 : width + 1] = images[n, 0]
        padded[height + 1, 1 : width + 1] = images[n, height - 1]
        padded[:, 0] = padded[:, 1]
        padded[:, width + 1] = padded[:, width]
        for y in range(height):
            for x in range(width):
                p0, p1, p2 = padded[y, x], padded[y, x + 1], padded[y, x + 2]
                p3, p4, p5 = padded[y + 1, x], padded[y + 1, x + 1], padded[y + 1, x + 2]
                p6, p7, p8 = padded[y + 2, x], padded[y + 2, x + 1], padded[y + 2, x + 2]
                p1, p2 = min(p1, p2), max(p1, p2)
                p4, p5 = min(p4, p5), max(p4, p5)
                p7, p8 = min(p7, p8), max(p7, p8)
                p0, p1 = min(p0, p1), max(p0, p1)
                p3, p4 = min(p3, p4), max(p3, p4)
                p6, p7 = min(p6, p7), max(p6, p7)
                p1, p2 = min(p1, p2), max(p1, p2)
                p4, p5 = min(p4, p5), max(p4, p5)
                p7, p8 = min(p7, p8), max(p7, p8)
                p0, p3 = min(p0, p3), max(p0, p3)
                p5, p8 = min(p5, p8), max(p5, p8)
                p4, p7 = min(p4, p7), max(p4, p7)
                p3, p6 = min(p3, p6), max(p3, p6)
                p1, p4 = min(p1, p4), max(p1, p4)
                p2, p5 = min(p2, p5), max(p2, p5)
                p4, p7 = min(p4, p7), max(p4, p7)
                p4, p2 = min(p4, p2), max(p4, p2)
                p6, p4 = min(p6, p4), max(p6, p4)
                p4, p2 = min(p4, p2), max(p4, p2)
                out[n, y, x] = p4
    return out


@numba.njit(cache=True)
def luma_chroma(rgb: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, P, 3) uint8 → the rounded luminance (B, P) uint8 and the chroma R − Y, B − Y laid out
    pixel-major, (2, P, B) float32 — the layout the view samplers' sparse product reads. Written in tiles
    of pixels so that the transposed writes stay in cache (a separate transpose of the float32 chroma
    cost 5× this whole kernel). Each pixel's luminance is one fixed sum: the same whatever the batch."""
    batch, pixels = rgb.shape[0], rgb.shape[1]
    grey = np.empty((batch, pixels), np.uint8)
    chroma = np.empty((2, pixels, batch), np.float32)
    wr, wg, wb = weights[0], weights[1], weights[2]
    for start in range(0, pixels, _TILE):
        stop = min(start + _TILE, pixels)
        for n in range(batch):
            for i in range(start, stop):
                r, g, b = np.float32(rgb[n, i, 0]), np.float32(rgb[n, i, 1]), np.float32(rgb[n, i, 2])
                y = r * wr + g * wg + b * wb
                grey[n, i] = np.uint8(min(max(np.rint(y), np.float32(0.0)), np.float32(255.0)))
                chroma[0, i, n] = r - y
                chroma[1, i, n] = b - y
    return grey, chroma


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
