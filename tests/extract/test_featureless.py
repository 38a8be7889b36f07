"""Featureless images: the colour squares of the built-in corpus are, detailed emoji are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memguard.corpus.twemoji import emoji_files, emoji_name, render
from memguard.experiment.report import console_summary, featureless_notes
from memguard.extract.featureless import featureless, mean_colour_images

SQUARES = {
    "large red square",
    "large blue square",
    "large orange square",
    "large yellow square",
    "large green square",
    "large purple square",
    "large brown square",
    "black large square",
    "white large square",
}


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, list[str]]:
    """The nine large squares among 300 other emoji drawn at random (every emoji is rendered at 8 px)."""
    files = emoji_files()
    names = [emoji_name(f.stem) for f in files]
    squares = [i for i, name in enumerate(names) if name in SQUARES]
    others = [i for i in np.random.default_rng(0).permutation(len(files)) if names[i] not in SQUARES][:300]
    chosen = squares + others
    return np.stack([render(files[i], 8) for i in chosen]), [names[i] for i in chosen]


def test_mean_colour_images_are_plain() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    plain = mean_colour_images(images)
    assert plain.shape == images.shape and plain.flags.writeable
    assert (plain == plain[:, :1, :1, :]).all()
    assert np.array_equal(plain[:, 0, 0], images.reshape(3, -1, 3).mean(1).round().astype(np.uint8))


def test_the_colour_squares_and_nothing_else(corpus: tuple[np.ndarray, list[str]]) -> None:
    images, names = corpus
    flags = featureless(images, np.arange(len(images)), images, groups=None, delta=0.3)
    assert {names[i] for i in np.flatnonzero(flags)} == SQUARES


def test_copies_grouped_as_the_attack_groups_them(corpus: tuple[np.ndarray, list[str]]) -> None:
    """With several copies per image (grouped), a square is still found against its own group, and only
    the images asked about are tested."""
    images, names = corpus
    copies = np.concatenate([images, images[:20]])
    groups = np.concatenate([np.arange(len(images)), np.arange(20)])
    which = np.array([0, 1, 15, 40])  # two squares, two detailed emoji
    flags = featureless(images, which, copies, groups=groups, delta=0.3)
    assert flags.tolist() == [names[i] in SQUARES for i in which] == [True, True, False, False]
    assert not featureless(images, which, copies, groups=groups, delta=0.3, factor=0).any()
    assert featureless(images, np.array([], dtype=int), copies, groups=groups, delta=0.3).shape == (0,)


def test_report_names_featureless_extractions() -> None:
    metrics = {
        "arms": {
            "raw": {"extracted_images": 5, "extracted_featureless_images": 0, "featureless_keys": []},
            "dedup": {"extracted_images": 4, "extracted_featureless_images": 3, "featureless_keys": ["a", "b", "c"]},
            "reweight": {"extracted_images": 1},  # an audit from before the field: nothing to say
        }
    }
    notes = featureless_notes(metrics)
    assert len(notes) == 1 and notes[0].startswith("dedup: 3 of its 4 extracted images are featureless (a, b, c)")
    for d in metrics["arms"].values():
        d.update(extracted_duplicated_images=0, mia_auc=0.5, heldout_loss=0.1)
    summary = console_summary({"experiment": "x", "seconds": 1.0, "arms": metrics["arms"], "stages": {}}, Path("r"))
    assert "(0 duplicated in the raw corpus, 3 featureless)" in summary
    assert summary.count("featureless") == 1  # only the arm that has some
