"""Featureless training images: those that a blur would "extract".

Carlini's normalized ℓ2 cannot tell a copy from a smooth blob of the right colour when the training image
has almost no detail of its own (a uniform colour square): the model generates such a blob from what it
learned of many similar images, without having memorized this one. The test here asks, per image,
whether a generation carrying only part of the image's detail would pass: the image's own mean colour as
a plain image (its featureless stand-in) is scored with the attack, and the image is featureless when that
stand-in is nearest to it and its score is below ``factor`` × δ. With factor 2, a generation halfway
between the stand-in and the image — half the image's deviation from its mean colour — would score about
δ (half the distance to the image, against a similar neighbourhood). On the built-in corpus this marks
the large colour squares and nothing else, at 8 and at 32 px (bench/featureless_check.py).
"""

from __future__ import annotations

import numpy as np

from memguard.extract.attacks import UncondResult, unconditional_attack


def mean_colour_images(images: np.ndarray) -> np.ndarray:
    """Each image (uint8 NHWC) replaced by a plain image of its mean colour."""
    means = images.reshape(len(images), -1, images.shape[-1]).mean(axis=1).round().astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(means[:, None, None, :], images.shape))


def stand_in_scores(
    images: np.ndarray,
    which: np.ndarray,
    training: np.ndarray,
    *,
    groups: np.ndarray | None,
    alpha: float = 0.5,
    n: int = 50,
    device: str | None = None,
) -> UncondResult:
    """The attack's verdict on the mean-colour stand-ins of the reference images ``which`` (indices into
    ``images``, one image per group) against ``training`` (the copies, grouped by ``groups`` as the
    attack groups them)."""
    return unconditional_attack(
        mean_colour_images(images[which]), training, alpha=alpha, n=n, device=device, groups=groups
    )


def featureless(
    images: np.ndarray,
    which: np.ndarray,
    training: np.ndarray,
    *,
    groups: np.ndarray | None,
    delta: float,
    factor: float = 2.0,
    alpha: float = 0.5,
    n: int = 50,
    device: str | None = None,
) -> np.ndarray:
    """For the reference images ``which``, whether each is featureless: its mean-colour stand-in is
    nearest to that image itself and scores below ``factor`` × ``delta``."""
    which = np.asarray(which, dtype=np.int64)
    if len(which) == 0 or factor <= 0:
        return np.zeros(len(which), dtype=bool)
    result = stand_in_scores(images, which, training, groups=groups, alpha=alpha, n=n, device=device)
    return (result.nearest == which) & (result.score < factor * delta)
