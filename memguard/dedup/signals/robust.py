"""The ``robust`` image embedder: copies are found after crops, pads, flips, small rotations, overlaid
text, greyscale, colour jitter, resizing and JPEG, with no learned weights.

Each image becomes several *views*, each a small descriptor, and two images are as similar as their
best-matching pair of views (``memguard/dedup/signals/views.py``). How each edit is met:

- resizing, JPEG: every image is first resampled to a fixed 64² working size, then reduced to a
  16² luminance grid (``GRID``) and a 4² chroma grid — fine detail and block artefacts do not reach it;
- overlaid text (watermarks): two passes of a 3×3 median filter on the working luminance remove thin
  strokes;
- colour jitter: the luminance grid is mean-centred and scaled to unit norm (brightness and contrast);
- greyscale: a ``grey`` view — the descriptor with its chroma set to zero — is compared with the other
  image's base view; a grey copy of a coloured original *is* that view, while two coloured images still
  differ in chroma (red and blue hearts stay apart);
- flip: a ``flip`` view (the grids mirrored) against the base view;
- letterbox / pillarbox pads and uniform borders: a ``trim`` view of the bounding box of what differs
  from the border colour, compared with the other image's ``trim`` view;
- crops and rotations: views of the central ``CROP`` of the image and of the image rotated by
  ±``ROTATION`` degrees, against the base view;
- re-crops of a few pixels per side resized back (zooms up to ~14% with shifts): pairs whose best view
  pair reaches ``ALIGN_FLOOR`` are compared once more with one base grid resampled through the best of
  the small windows that move each side by up to ``ALIGN_STEPS`` × ``ALIGN_STEP`` of the image side
  (``memguard/dedup/signals/robust_align.py``).

Each view's vector: the unit luminance structure, the chroma grid (R−Y, B−Y over 255), the mean
luminance offset from mid-grey and a small constant (flat images of different brightness or colour stay
apart, as in the ``pixels`` embedder); the whole vector has unit norm. Why by hand: no installed library
computes a weights-free descriptor with these invariances (imagehash's hashes are single-view and fail
on crops, pads, flips and rotations — bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
from PIL import Image
from scipy import sparse

from memguard.dedup.signals.robust_align import aligned_similarity
from memguard.dedup.signals.robust_kernels import luma_chroma, median3, trim_box
from memguard.dedup.signals.views import ViewLayout, ViewPair

WORK = 64  # working side: every image is resampled to WORK² before any view is taken
GRID = 16  # luminance grid side of each view
CHROMA_GRID = 4
MEDIAN_PASSES = 2  # 3×3 medians in a row: thin strokes of overlaid text are gone, edges stay
BLUR_SIGMA = 0.5  # in working pixels, before the grids are taken (tolerance to small shifts)
CROP = 0.8  # side of the central crop view, as a fraction of the image side
ROTATION = 6.0  # degrees of the two rotated views
TRIM_TOLERANCE = 12  # a pixel belongs to the border when no channel differs from its colour by more
TRIM_MASS = 0.99  # the trim box holds this share of the non-border pixels (stray marks are cut off)
CHROMA_WEIGHT = 1.0
CHROMA_FLOOR = 1.0  # grey levels (R−Y, B−Y averaged over a chroma cell)
LEVEL_WEIGHT = 1.0
ANCHOR = 0.1
STRUCTURE_FLOOR = 1e-3  # luminance grids in [0, 1]: one grey level on a single cell is 4e-3
LEVEL_RADIUS = 0.2  # the mean luminance as a point on a half circle of this radius
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 (PIL's "L"): greyscale copies keep it

# Alignment: each side of the window moves by up to 2 × 1/32 of the image side (2 px at 32 px, the
# built-in corpus's re-crops); pairs below the floor (the loose image threshold) are not refined.
ALIGN_STEP = 1 / 32
ALIGN_STEPS = 2
ALIGN_FLOOR = 0.8


def _aligned(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Base views compared under the best small window (a module function: layouts travel to workers)."""
    return aligned_similarity(x, y, side=GRID, chroma_side=CHROMA_GRID, step=ALIGN_STEP, steps=ALIGN_STEPS)


VIEWS = ("base", "trim", "flip", "grey", "crop", "rotate+", "rotate-")
# Which views of two images are compared: base with base, trim with trim, each edit view with the base.
# The grey view counts only against an image without colour (its base and grey views are equal).
LAYOUT = ViewLayout(
    count=len(VIEWS),
    pairs=(
        ViewPair(0, 0),
        ViewPair(1, 1, search_unless_equal=0),
        ViewPair(2, 0),
        ViewPair(3, 0, gate=(0, 3), search_unless_equal=0),
        ViewPair(4, 0),
        ViewPair(5, 0),
        ViewPair(6, 0),
    ),
    refine=_aligned,
    refine_view=0,
    refine_floor=ALIGN_FLOOR,
)
VIEW_DIM = GRID * GRID + 2 * CHROMA_GRID * CHROMA_GRID + 4


def _gaussian(n: int, sigma: float) -> np.ndarray:
    """(n, n) row-stochastic blur with edges clamped."""
    x = np.arange(n)
    weights = np.exp(-0.5 * ((x[None, :] - x[:, None]) / sigma) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


@cache
def _sampler(side: int, scale: float, degrees: float, *, sigma: float) -> tuple[sparse.csr_matrix, np.ndarray]:
    """A sparse (side², WORK²) matrix and a (side²,) vector: each output cell's mean of the (blurred)
    working image seen through a rotation by ``degrees`` about the centre and a central window of
    ``scale`` (bilinear sampling at 8×8 points per cell), and the share of the cell that falls outside
    the image (filled with the border colour, as an editor fills a rotated image's corners). A view of a
    batch is then one sparse product."""
    points = 8
    u = (np.arange(side * points) + 0.5) / (side * points)
    gy, gx = np.meshgrid(u, u, indexing="ij")
    cx, cy = (gx - 0.5) * scale, (gy - 0.5) * scale
    theta = np.deg2rad(degrees)
    sx = (np.cos(theta) * cx - np.sin(theta) * cy + 0.5) * WORK - 0.5
    sy = (np.sin(theta) * cx + np.cos(theta) * cy + 0.5) * WORK - 0.5
    inside = ((sx >= -0.5) & (sx <= WORK - 0.5) & (sy >= -0.5) & (sy <= WORK - 0.5)).ravel()
    sx, sy = np.clip(sx, 0, WORK - 1).ravel(), np.clip(sy, 0, WORK - 1).ravel()
    x0, y0 = np.minimum(np.floor(sx).astype(int), WORK - 2), np.minimum(np.floor(sy).astype(int), WORK - 2)
    fx, fy = sx - x0, sy - y0
    cell = ((np.arange(side * points)[:, None] // points) * side + np.arange(side * points)[None, :] // points).ravel()
    rows, cols, weights = [], [], []
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        rows.append(cell)
        cols.append((y0 + dy) * WORK + x0 + dx)
        weights.append(w * inside / points**2)
    shape = (side * side, WORK * WORK)
    matrix = sparse.coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    outside = np.bincount(cell, weights=~inside, minlength=side * side) / points**2
    blur = sparse.csr_matrix(np.where((g := _gaussian(WORK, sigma)) > 1e-4, g, 0.0))
    blurred = (matrix.tocsr() @ sparse.kron(blur, blur, format="csr")).astype(np.float32)
    return blurred.tocsr(), outside.astype(np.float32)


@cache
def _stacked(side: int, views: tuple[tuple[float, float], ...]) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The samplers of several (scale, degrees) views stacked: one sparse product samples them all."""
    parts = [_sampler(side, scale, degrees, sigma=BLUR_SIGMA) for scale, degrees in views]
    return sparse.vstack([m for m, _ in parts], format="csr"), np.concatenate([o for _, o in parts])


def _view_grids(values: np.ndarray, side: int, views: tuple[tuple[float, float], ...]) -> list[np.ndarray]:
    """values (WORK², B), pixel-major → one (B, side²) grid per view; what lies outside the image takes
    the border colour (per image, the median of the four corners)."""
    matrix, outside = _stacked(side, views)
    border = np.median(values[CORNERS], axis=0)
    grids = np.asarray(matrix @ values).T + border[:, None] * outside[None, :]
    return np.split(grids, len(views), axis=1)


CORNERS = np.array([0, WORK - 1, WORK * (WORK - 1), WORK * WORK - 1])
GEOMETRIC = (("base", 1.0, 0.0), ("crop", CROP, 0.0), ("rotate+", 1.0, ROTATION), ("rotate-", 1.0, -ROTATION))


LONG_SIDE_CAP = 32  # the working copy's long side at most this many times WORK (limits.max_aspect's default)
Working = tuple[np.ndarray, np.ndarray]  # luminance (WORK², B), chroma (2, WORK², B): float32 in [0, 255]


def _square(image: Image.Image) -> np.ndarray:
    return np.asarray(image.resize((WORK, WORK), Image.Resampling.BILINEAR))


def _whole_and_trimmed(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The image at WORK², and its trim box at WORK² (None: nothing to trim). The box is found on a
    copy whose short side is WORK and whose aspect ratio is the source's, so that a letterboxed copy's
    bars and content keep their proportions (found on the squashed square, the cut content came back
    misaligned). An image already WORK² is used as it is (PIL's resize to the same size is a copy)."""
    if rgb.shape[:2] == (WORK, WORK):
        whole = kept = rgb
    else:
        image = Image.fromarray(rgb)
        whole = _square(image)
        width, height = image.size
        scale = WORK / min(width, height)
        # The long side is capped (LONG_SIDE_CAP × WORK): a caller's 8×10^6 array must not become 64×8·10^6.
        cap = LONG_SIDE_CAP * WORK
        sized = (min(cap, max(WORK, round(width * scale))), min(cap, max(WORK, round(height * scale))))
        kept = whole if sized == (WORK, WORK) else np.asarray(image.resize(sized, Image.Resampling.BILINEAR))
    top, bottom, left, right = trim_box(kept, TRIM_TOLERANCE, TRIM_MASS)
    if (top, bottom, left, right) == (0, kept.shape[0], 0, kept.shape[1]):
        return whole, None
    return whole, _square(Image.fromarray(np.ascontiguousarray(kept[top:bottom, left:right])))


def _channels(rgb: np.ndarray) -> Working:
    """(B, WORK, WORK, 3) uint8 → median-filtered luminance and chroma, pixel-major."""
    grey, chroma = luma_chroma(rgb.reshape(len(rgb), WORK * WORK, 3), LUMA)
    grey = grey.reshape(len(rgb), WORK, WORK)
    for _ in range(MEDIAN_PASSES):
        grey = median3(grey)
    return np.ascontiguousarray(grey.reshape(len(rgb), -1).T, dtype=np.float32), chroma


def _vectors(luminance: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Per view descriptors from grids: luminance (B, GRID²), chroma (B, 2·CHROMA_GRID²) → (B, VIEW_DIM)."""
    grid = luminance / 255.0
    level = grid.mean(axis=1, keepdims=True)
    structure = grid - level
    norms = np.linalg.norm(structure, axis=1, keepdims=True)
    # Below STRUCTURE_FLOOR the "structure" is the float rounding of a flat grid (~1e-5), not the image's:
    # scaled to unit norm it would be noise that two copies of one flat image do not share.
    structure = np.where(norms > STRUCTURE_FLOOR, structure / np.maximum(norms, 1e-12), 0.0)
    angle = np.pi * (level - 0.5)  # black −π/2, mid-grey 0, white π/2
    # An image whose chroma stays below CHROMA_FLOOR grey levels everywhere is grey: its chroma is set to
    # exactly zero, so that a grey image stays achromatic after JPEG and rounding, which the grey view's
    # gate (base and grey views equal) relies on.
    chroma = np.where(np.abs(chroma).max(axis=1, keepdims=True) < CHROMA_FLOOR, 0.0, chroma)
    brightness = LEVEL_RADIUS * np.concatenate([np.cos(angle), np.sin(angle)], axis=1)
    linear = np.concatenate([LEVEL_WEIGHT * (level - 0.5), np.full_like(level, ANCHOR)], axis=1)
    out = np.concatenate([structure, CHROMA_WEIGHT * chroma / 255.0, linear, brightness], axis=1)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _grids(
    working: Working, views: tuple[tuple[str, float, float], ...]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Luminance and chroma grids of each named (scale, degrees) view of a working batch."""
    luminance, chroma = working
    geometric = tuple((scale, degrees) for _, scale, degrees in views)
    lum = _view_grids(luminance, GRID, geometric)
    cb, cr = (_view_grids(chroma[c], CHROMA_GRID, geometric) for c in range(2))
    names = [name for name, _, _ in views]
    return dict(zip(names, lum, strict=True)), {
        n: np.concatenate([b, r], axis=1) for n, b, r in zip(names, cb, cr, strict=True)
    }


def _mirror(grid: np.ndarray, side: int, channels: int = 1) -> np.ndarray:
    return grid.reshape(len(grid), channels, side, side)[..., ::-1].reshape(len(grid), -1)


class RobustEmbedder:
    """Multi-view descriptors, (N, len(VIEWS) · VIEW_DIM) float32, each view of unit norm."""

    name = "robust"

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, len(VIEWS) * VIEW_DIM), np.float32)
        pairs = [_whole_and_trimmed(rgb) for rgb in images]
        lum_grids, chr_grids = _grids(_channels(np.stack([whole for whole, _ in pairs])), GEOMETRIC)
        # An image with nothing to trim has its base view as its trim view: only the others are sampled.
        lum_grids["trim"], chr_grids["trim"] = lum_grids["base"].copy(), chr_grids["base"].copy()
        boxed = [(i, trimmed) for i, (_, trimmed) in enumerate(pairs) if trimmed is not None]
        if boxed:
            trim_lum, trim_chr = _grids(_channels(np.stack([t for _, t in boxed])), (("trim", 1.0, 0.0),))
            rows = [i for i, _ in boxed]
            lum_grids["trim"][rows], chr_grids["trim"][rows] = trim_lum["trim"], trim_chr["trim"]
        lum_grids["flip"] = _mirror(lum_grids["base"], GRID)
        chr_grids["flip"] = _mirror(chr_grids["base"], CHROMA_GRID, 2)
        lum_grids["grey"] = lum_grids["base"]
        chr_grids["grey"] = np.zeros_like(chr_grids["base"])
        return np.concatenate([_vectors(lum_grids[v], chr_grids[v]) for v in VIEWS], axis=1)
