"""Local features with geometric verification: the second stage of the image signal.

The global descriptor (``robust``) finds candidates and scores whole-image resemblance; it fails where a
copy shares only a region with its original (tighter crops, borders, a picture pasted into a screenshot
or collage, burned-in text, rotations beyond its views). Copy detection's classic second stage meets
those edits (Copydays and the DISC21 baselines): keypoints with binary descriptors per image, then, on a
candidate pair only, descriptor matches filtered by Lowe's ratio test and a RANSAC fit of a similarity
transform (rotation, scale, shift); the pair is a verified copy when enough matches agree with one
transform *and* the transform says one image lies (nearly) inside the other while covering at least a
third of it. Everything here is OpenCV's (ORB, the Hamming matcher, ``estimateAffinePartial2D``); only
the packing of features into fixed-width rows and the coverage test are written here, because the
dedup stages move per-sample arrays of one width.

Precision: a low-texture image (sky, gradient, solid fill) has few corners, so few keypoints, and fewer
than ``min_inliers`` matches can never verify; matches must spread over the overlap (``min_spread``), so
one shared logo or caption does not join two photographs; a region under a third of the other image (a
small tile of a larger photograph) is not a copy of it.

Mirrored copies: ORB is not mirror invariant, so each image also carries descriptors of its mirror image
at the mirrored keypoints (detection is mirror symmetric; only the descriptors differ).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from memguard.common.config import in_range
from memguard.common.mapped import release
from memguard.dedup.signals.pairs import PairTable

DESCRIPTOR = 32  # bytes of an ORB descriptor
HEADER = 4  # working width and height, uint16 each
MISSING = 0xFFFF  # the x coordinate of an empty keypoint slot
BITS = DESCRIPTOR * 8
GRID = 12  # points per side sampled to measure how much of one image the transform puts inside the other


@dataclass(frozen=True)
class VoteParams:
    """enabled: add descriptor-voting candidates to the neighbour search's. ``vote_descriptors`` per
    image enter the index (4 KB each at 128); each query descriptor's ``vote_neighbours`` nearest within
    ``max_hamming`` of 256 bits vote; ``min_votes`` make a candidate pair. IVF above ``exact_below``
    descriptors (``nprobe`` of max(√n, n/256) lists, trained on 39 a list)."""

    enabled: bool = True
    vote_descriptors: int = 128
    vote_neighbours: int = 4
    max_hamming: int = 40
    min_votes: int = 6
    exact_below: int = 20_000
    nprobe: int = 16

    def __post_init__(self) -> None:
        in_range("dedup.image.local.votes.vote_descriptors", self.vote_descriptors, lo=1)
        in_range("dedup.image.local.votes.vote_neighbours", self.vote_neighbours, lo=1, hi=64)
        in_range("dedup.image.local.votes.max_hamming", self.max_hamming, lo=0, hi=BITS)
        in_range("dedup.image.local.votes.min_votes", self.min_votes, lo=1)
        in_range("dedup.image.local.votes.exact_below", self.exact_below, lo=0)
        in_range("dedup.image.local.votes.nprobe", self.nprobe, lo=1)


@dataclass(frozen=True)
class FeatureParams:
    """What the map computes per image (its cache key: verification parameters are not). Each image is
    resized to ``side`` px on its long side (smaller images to at least ``min_side``), grey, and keeps
    its ``keypoints`` strongest ORB keypoints (``fast_threshold``: FAST's contrast, low so that soft
    photographs have keypoints too), with mirrored descriptors if ``mirror``. Images under
    ``min_image_side`` on their long side get none: on 32-px emoji upsampled, the shared outlines of
    different drawings verified (built-in corpus precision 0.75 instead of 0.98), and such images are
    the global descriptor's domain."""

    keypoints: int = 256
    side: int = 256
    min_side: int = 128
    mirror: bool = True
    fast_threshold: int = 8
    min_image_side: int = 96

    def __post_init__(self) -> None:
        in_range("dedup.image.local.features.keypoints", self.keypoints, lo=8, hi=4096)
        in_range("dedup.image.local.features.side", self.side, lo=32, hi=4096)
        in_range("dedup.image.local.features.min_side", self.min_side, lo=32, hi=self.side)
        in_range("dedup.image.local.features.fast_threshold", self.fast_threshold, lo=1, hi=255)
        in_range("dedup.image.local.features.min_image_side", self.min_image_side, lo=0)

    @property
    def row_bytes(self) -> int:
        return feature_row_bytes(self.keypoints, mirror=self.mirror)


@dataclass(frozen=True)
class LocalParams:
    """enabled: verify candidate pairs with local features (false: the global descriptor alone);
    ``features``: what each image carries. A pair verifies with ≥ ``min_inliers`` ratio-test matches
    (``ratio``) consistent with one similarity transform (RANSAC, ``reprojection`` × the working long
    side), one image at least ``min_contained`` inside the other and the other at least ``min_overlap``
    covered, and the inliers spread over ≥ ``min_spread`` of the overlap in both. Its similarity is then
    ``verified_similarity`` plus the rest to 1 in proportion to its inliers; the image similarity of a
    pair is the larger of that and the global one. Global similarities at or above ``trust_global``
    stand as they are; below it, a pair of two textured images (each with ≥ ``textured_keypoints``
    keypoints) that does not verify counts at most ``unverified_cap``: two tiles of one texture
    (retina, bricks, a bridge's girders) resemble each other globally, but their keypoints do not line
    up under any transform. Candidates for verification: the global neighbours down to
    ``candidate_floor``, and pairs whose descriptors agree (``votes``:
    memguard/dedup/signals/local_candidates.py)."""

    enabled: bool = True
    features: FeatureParams = field(default_factory=FeatureParams)
    ratio: float = 0.8
    min_inliers: int = 12
    reprojection: float = 0.012
    min_contained: float = 0.7
    min_overlap: float = 0.5
    min_spread: float = 0.3
    verified_similarity: float = 0.98
    trust_global: float = 0.995
    textured_keypoints: int = 32
    unverified_cap: float = 0.9
    candidate_floor: float = 0.3
    votes: VoteParams = field(default_factory=VoteParams)

    def __post_init__(self) -> None:
        in_range("dedup.image.local.ratio", self.ratio, lo=0.0, hi=1.0)
        in_range("dedup.image.local.min_inliers", self.min_inliers, lo=4)
        in_range("dedup.image.local.reprojection", self.reprojection, lo=0.0, hi=0.5)
        for name in ("min_contained", "min_overlap", "min_spread"):
            in_range(f"dedup.image.local.{name}", getattr(self, name), lo=0.0, hi=1.0)
        in_range("dedup.image.local.verified_similarity", self.verified_similarity, lo=-1.0, hi=1.0)
        in_range("dedup.image.local.trust_global", self.trust_global, lo=-1.0, hi=1.0)
        in_range("dedup.image.local.textured_keypoints", self.textured_keypoints, lo=0)
        in_range("dedup.image.local.unverified_cap", self.unverified_cap, lo=-1.0, hi=1.0)
        in_range("dedup.image.local.candidate_floor", self.candidate_floor, lo=-1.0, hi=1.0)


def feature_row_bytes(keypoints: int, *, mirror: bool) -> int:
    """Bytes of one image's packed features: header, then per keypoint x, y (uint16, 1/16 px) and its
    descriptor, then the mirrored descriptors."""
    return HEADER + keypoints * (4 + DESCRIPTOR * (2 if mirror else 1))


def _working(rgb: np.ndarray, params: FeatureParams) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    scale = params.side / max(h, w)
    if max(h, w) * scale < params.min_side:
        scale = params.min_side / max(h, w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return grey if size == (w, h) else cv2.resize(grey, size, interpolation=interpolation)


def _orb(params: FeatureParams) -> cv2.ORB:
    # A 19-px patch and border (31 by default) keep keypoints near the edges of small working images.
    return cv2.ORB.create(nfeatures=params.keypoints, edgeThreshold=19, patchSize=19, fastThreshold=params.fast_threshold)


def local_features(images: Sequence[np.ndarray], params: FeatureParams) -> np.ndarray:
    """(len(images), params.row_bytes) uint8: each image's packed keypoints and descriptors."""
    k = params.keypoints
    out = np.zeros((len(images), params.row_bytes), np.uint8)
    out[:, HEADER : HEADER + 4 * k] = 0xFF  # every keypoint slot empty (x = MISSING) until filled
    orb = _orb(params)
    for row, rgb in zip(out, images, strict=True):
        if max(rgb.shape[:2]) < params.min_image_side:
            continue  # no keypoints: an icon's corners, upsampled, match other icons' (see LocalParams)
        work = _working(rgb, params)
        h, w = work.shape
        row[:HEADER] = np.frombuffer(np.array([w, h], "<u2").tobytes(), np.uint8)
        xy = np.full((k, 2), MISSING, "<u2")
        descriptors = np.zeros((k, DESCRIPTOR * (2 if params.mirror else 1)), np.uint8)
        points, found = orb.detectAndCompute(work, None)
        if found is not None and len(points):
            points, found = points[:k], found[:k]
            xy[: len(points)] = np.rint(np.array([p.pt for p in points]) * 16).astype("<u2")
            descriptors[: len(points), :DESCRIPTOR] = found
            if params.mirror:
                mirrored = [cv2.KeyPoint(w - 1 - p.pt[0], p.pt[1], p.size, (180.0 - p.angle) % 360, p.response,
                                         p.octave, i) for i, p in enumerate(points)]  # fmt: skip
                kept, flipped = orb.compute(np.ascontiguousarray(work[:, ::-1]), mirrored)
                if flipped is not None:  # compute may drop a keypoint: its mirrored slot stays empty
                    descriptors[[p.class_id for p in kept], DESCRIPTOR:] = flipped
        row[HEADER : HEADER + 4 * k] = np.frombuffer(xy.tobytes(), np.uint8)
        row[HEADER + 4 * k :] = descriptors.reshape(-1)
    return out


@dataclass(frozen=True)
class Unpacked:
    size: tuple[int, int]  # working width, height
    points: np.ndarray  # (m, 2) float32, working pixels
    descriptors: np.ndarray  # (m, 32) uint8
    mirrored: np.ndarray | None  # (m, 32) uint8 at the mirrored points, or None


def unpack(row: np.ndarray, params: FeatureParams) -> Unpacked:
    k = params.keypoints
    w, h = (int(v) for v in np.frombuffer(row[:HEADER].tobytes(), "<u2"))
    xy = np.frombuffer(row[HEADER : HEADER + 4 * k].tobytes(), "<u2").reshape(k, 2)
    m = int(np.count_nonzero(xy[:, 0] != MISSING))
    descriptors = np.asarray(row[HEADER + 4 * k :]).reshape(k, -1)
    mirrored = np.ascontiguousarray(descriptors[:m, DESCRIPTOR:]) if params.mirror else None
    return Unpacked((w, h), xy[:m].astype(np.float32) / 16, np.ascontiguousarray(descriptors[:m, :DESCRIPTOR]), mirrored)


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


class FeatureBank:
    """The packed features of a set of samples: sample i's row ``rows[i]`` of ``features`` (-1: no
    keypoints; default: row i). Unpacked rows are kept (the most recent ``ROWS_KEPT``): pairs come
    grouped by their first sample."""

    def __init__(self, features: np.ndarray, params: FeatureParams, *, rows: np.ndarray | None = None) -> None:
        self.features, self.params = features, params
        self.rows = np.arange(len(features)) if rows is None else np.asarray(rows)
        self._unpacked: OrderedDict[int, Unpacked] = OrderedDict()
        self._counts: np.ndarray | None = None

    def counts(self) -> np.ndarray:
        """Keypoints per sample (computed once)."""
        if self._counts is None:
            packed = keypoint_counts(self.features, self.params)
            self._counts = np.where(self.rows >= 0, packed[np.maximum(self.rows, 0)] if len(packed) else 0, 0)
        return self._counts

    def get(self, i: int) -> Unpacked:
        row = self._unpacked.get(i)
        if row is None:
            if self.rows[i] < 0:
                return EMPTY
            row = self._unpacked[i] = unpack(np.asarray(self.features[self.rows[i]]), self.params)
            if len(self._unpacked) > ROWS_KEPT:
                self._unpacked.popitem(last=False)
        else:
            self._unpacked.move_to_end(i)
        return row


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


def keypoint_counts(features: np.ndarray, params: FeatureParams, block: int = 65_536) -> np.ndarray:
    """Keypoints per packed row, a block of rows at a time."""
    k = params.keypoints
    counts = np.zeros(len(features), np.int64)
    for start in range(0, len(features), block):
        xy = np.asarray(features[start : start + block, HEADER : HEADER + 4 * k])
        x = xy.reshape(len(xy), k, 4)[:, :, :2].copy().view("<u2")[..., 0]
        counts[start : start + block] = (x != MISSING).sum(axis=1)
        release(features)
    return counts


EMPTY = Unpacked((0, 0), np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR), np.uint8), None)
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
ROWS_KEPT = 65_536  # unpacked rows kept by a Verifier (a few KiB each)
