"""Local features with geometric verification: the second stage of the image signal.

The global descriptor (``robust``) finds candidates and scores whole-image resemblance; it fails where a
copy shares only a region with its original (tighter crops, borders, a picture pasted into a screenshot
or collage, burned-in text, rotations beyond its views). Copy detection's classic second stage meets
those edits (Copydays and the DISC21 baselines): keypoints with binary descriptors per image, then, on a
candidate pair only, descriptor matches filtered by Lowe's ratio test and a RANSAC fit of a similarity
transform (rotation, scale, shift); the pair is a verified copy when enough matches agree with one
transform *and* the transform says one image lies (nearly) inside the other while covering at least
half of it. Everything here is OpenCV's (ORB, the Hamming matcher, ``estimateAffinePartial2D``); only
the coverage and spread tests are written here (no library has them). Parameters:
memguard/dedup/signals/local_params.py; packed features: memguard/dedup/signals/local_features.py.

Precision: a low-texture image (sky, gradient, solid fill) has few corners, so few keypoints, and fewer
than ``min_inliers`` matches can never verify; matches must spread over the overlap (``min_spread``), so
one shared logo or caption does not join two photographs; a region under half of the other image (a
small tile of a larger photograph) is not a copy of it.

Mirrored copies: each image also carries descriptors of its mirror image, and a pair is tried mirrored
when it does not verify directly.
"""

from __future__ import annotations

import cv2
import numpy as np

from memguard.common.mapped import release
from memguard.dedup.signals.local_features import FeatureBank, Unpacked
from memguard.dedup.signals.local_params import LocalParams
from memguard.dedup.signals.pairs import PairTable

GRID = 12  # points per side sampled to measure how much of one image the transform puts inside the other


def _inside(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return (points[:, 0] >= 0) & (points[:, 0] <= size[0]) & (points[:, 1] >= 0) & (points[:, 1] <= size[1])


def _grid(size: tuple[int, int]) -> np.ndarray:
    u = (np.arange(GRID) + 0.5) / GRID
    gx, gy = np.meshgrid(u * size[0], u * size[1])
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


SPREAD_CELLS = 4  # the overlap's keypoints' bounding box cut into this many cells a side


def _spread(inliers: np.ndarray, overlapping: np.ndarray) -> float:
    """Of the cells (``SPREAD_CELLS``² over the bounding box of the image's keypoints that lie in the
    overlap) holding a keypoint, the share holding an inlier: near 1 when the matches cover the textured
    part the two images share (keypoints gather where texture is), small when they sit on one shared
    logo or caption."""
    low = overlapping.min(axis=0)
    extent = np.maximum(overlapping.max(axis=0) - low, 1e-6)

    def cells(points: np.ndarray) -> set[int]:
        ij = np.clip(((points - low) / extent * SPREAD_CELLS).astype(int), 0, SPREAD_CELLS - 1)
        return set((ij[:, 1] * SPREAD_CELLS + ij[:, 0]).tolist())

    return len(cells(inliers)) / max(1, len(cells(overlapping)))


def _fit(a: Unpacked, b: Unpacked, params: LocalParams) -> int:
    """Inliers of the best similarity transform from ``a`` to ``b``, 0 unless it passes the coverage
    and spread tests."""
    b_points, b_descriptors, b_size = b.points, b.descriptors, b.size
    if len(a.points) < params.min_inliers or len(b_points) < params.min_inliers:
        return 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b_descriptors, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < params.ratio * m[1].distance]
    if len(good) < params.min_inliers:
        return 0
    src = a.points[[m.queryIdx for m in good]]
    dst = b_points[[m.trainIdx for m in good]]
    threshold = params.reprojection * max(*a.size, *b_size)
    matrix, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                               maxIters=1000, confidence=0.995)  # fmt: skip
    if matrix is None or mask is None:
        return 0
    inliers = mask.ravel().astype(bool)
    count = int(inliers.sum())
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if count < params.min_inliers or not 1 / 16 < scale < 16:
        return 0
    inverse = cv2.invertAffineTransform(matrix)
    a_in_b = float(_inside(_apply(matrix, _grid(a.size)), b_size).mean())  # share of a inside b
    b_in_a = float(_inside(_apply(inverse, _grid(b_size)), a.size).mean())
    if max(a_in_b, b_in_a) < params.min_contained or min(a_in_b, b_in_a) < params.min_overlap:
        return 0
    a_overlapping = a.points[_inside(_apply(matrix, a.points), b_size)]
    b_overlapping = b_points[_inside(_apply(inverse, b_points), a.size)]
    spread = min(_spread(src[inliers], a_overlapping), _spread(dst[inliers], b_overlapping))
    return count if spread >= params.min_spread else 0


def verified_inliers(a: Unpacked, b: Unpacked, params: LocalParams) -> int:
    """The inliers of the pair's verified transform (0: not verified), directly or one mirrored."""
    direct = _fit(a, b, params)
    if direct or b.mirrored is None:
        return direct
    mirrored_points = np.stack([b.size[0] - 1 - b.points[:, 0], b.points[:, 1]], axis=1)
    return _fit(a, Unpacked(b.size, mirrored_points, b.mirrored, None), params)


class Verifier:
    """Verified similarities of pairs of samples of one bank of features (dedup: ``features``, row
    ``rows[i]`` per sample), or of a sample of ``features`` against one of ``other`` (the guard:
    generated images against the training set)."""

    def __init__(
        self, features: np.ndarray, params: LocalParams, *, rows: np.ndarray | None = None, other: FeatureBank | None = None
    ) -> None:
        self.params = params
        self.left = FeatureBank(features, params.features, rows=rows)
        self.right = self.left if other is None else other
        self._memo: dict[tuple[int, int], float] = {}  # the cluster pass asks for some pairs more than once

    def keypoint_counts(self) -> np.ndarray:
        """Keypoints per sample of the first bank."""
        return self.left.counts()

    def pair(self, i: int, j: int) -> float:
        """The verified similarity of sample i (first bank) and j (the other); NaN where they do not
        verify, -inf where they do not although both are textured (``textured_keypoints``). Within one
        bank symmetric, and a sample with itself NaN."""
        if self.right is self.left:
            if i == j:
                return float("nan")
            i, j = min(i, j), max(i, j)
        value = self._memo.get((i, j))
        if value is None:
            if len(self._memo) >= MEMO_PAIRS:
                self._memo.clear()
            value = self._memo[(i, j)] = self._verify(self.left.get(i), self.right.get(j))
        return value

    def _verify(self, a: Unpacked, b: Unpacked) -> float:
        params = self.params
        inliers = verified_inliers(a, b, params)  # one direction: the reverse found 2 more of 273 at twice the cost
        if inliers:
            top = 1.0 - params.verified_similarity
            return params.verified_similarity + top * min(1.0, inliers / params.features.keypoints)
        textured = min(len(a.points), len(b.points)) >= params.textured_keypoints
        return float("-inf") if textured else float("nan")

    def combined(self, sims: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The pairs' image similarity given their global ``sims``: at or above ``trust_global`` the
        global similarity; below it, the larger of the global and the verified similarity, or at most
        ``unverified_cap`` for two textured images that do not verify."""
        out = np.asarray(sims, np.float32).copy()
        with np.errstate(invalid="ignore"):
            todo = np.flatnonzero(~(out >= self.params.trust_global))
        # A pair with an image of fewer than min_inliers keypoints can neither verify nor be capped.
        enough = np.minimum(self.left.counts()[left[todo]], self.right.counts()[right[todo]])
        todo = todo[enough >= self.params.min_inliers]
        verified = np.array([self.pair(i, j) for i, j in zip(left[todo].tolist(), right[todo].tolist(), strict=True)],
                            np.float32)  # fmt: skip
        capped = np.where(verified == -np.inf, np.minimum(out[todo], self.params.unverified_cap), out[todo])
        out[todo] = np.fmax(capped, np.where(verified == -np.inf, np.nan, verified))
        release(self.left.features, self.right.features)
        return out


def scored_as_candidates(
    sims: np.ndarray, left: np.ndarray, right: np.ndarray, *, known: PairTable | None, verifier: Verifier | None
) -> np.ndarray:
    """The image similarity of pairs given their global ``sims``, as the candidate stage scores them:
    a candidate pair's as ``known`` holds it, any other pair's combined by ``verifier`` (None: global)."""
    hit, out = known.lookup(left, right, sims) if known is not None else (np.zeros(len(sims), bool), sims)
    if verifier is None or hit.all():
        return np.asarray(out, np.float32)
    miss = np.flatnonzero(~hit)
    out = np.array(out, np.float32, copy=True)
    out[miss] = verifier.combined(out[miss], left[miss], right[miss])
    return out


MEMO_PAIRS = 1 << 20
