"""Local features per image, packed into fixed-width rows (the dedup stages move per-sample arrays of
one width), and a bank of them read back by sample.

Each image is resized, grey, and keeps its strongest ORB keypoints (OpenCV) with their descriptors.
ORB is not mirror invariant, so each image also carries descriptors of its mirror image at the mirrored
keypoints (detection is mirror symmetric; only the descriptors differ). Written here: only the packing,
because no library stores keypoints in a fixed-width array.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from memguard.common.mapped import release
from memguard.dedup.signals.local_params import DESCRIPTOR, HEADER, MISSING, FeatureParams


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
ROWS_KEPT = 65_536  # unpacked rows kept by a FeatureBank (a few KiB each)


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
