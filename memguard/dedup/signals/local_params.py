"""The parameters of local-feature verification (memguard/dedup/signals/local.py) and the packed
row's layout: what the map computes per image (``FeatureParams``, the map's cache key), how pairs are
verified (``LocalParams``) and how descriptor voting finds candidates (``VoteParams``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from memguard.common.config import in_range

DESCRIPTOR = 32  # bytes of an ORB descriptor
HEADER = 4  # working width and height, uint16 each
MISSING = 0xFFFF  # the x coordinate of an empty keypoint slot
BITS = DESCRIPTOR * 8


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
