"""The built-in corpus: real Twemoji images, names as captions, injected copies matching the ground truth."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from memguard.common.config import ConfigError
from memguard.corpus.emoji_names import alternative_captions, emoji_name, natural_group
from memguard.corpus.inject import InjectionConfig, draw_counts
from memguard.corpus.readers import read_shards
from memguard.corpus.sample import Sample
from memguard.corpus.twemoji import build_twemoji, emoji_files, render
from memguard.corpus.validate import decode_image
from tests.conftest import TINY_TWEMOJI


def test_names_and_natural_groups() -> None:
    assert emoji_name("1f44b-1f3fd") == "waving hand sign medium skin tone"
    assert natural_group("1f44b-1f3fd") == natural_group("1f44b") == "1f44b"
    assert natural_group("1f468-200d-1f373") == natural_group("1f469-200d-1f373")  # man cook ~ woman cook
    assert len(emoji_files()) > 3900
    assert alternative_captions("1f600") == ["grinning", "grinning face emoji"]
    assert emoji_name("1f600") not in alternative_captions("1f600")


def test_ground_truth_matches_shards(cache_dir: Path) -> None:
    built = build_twemoji(TINY_TWEMOJI, cache_dir / "corpus")
    samples = [s for s in read_shards(str(built.train)) if isinstance(s, Sample)]
    truth = pq.read_table(built.ground_truth).to_pylist()
    train_truth = {t["key"]: t for t in truth if t["split"] == "train"}
    assert [s.key for s in samples] == sorted(train_truth) == sorted(s.key for s in samples)
    by_origin = Counter(t["origin"] for t in train_truth.values())
    for t in train_truth.values():
        assert by_origin[t["origin"]] == t["occurrences"]  # the stated count is the count in the shards
    assert built.info["injected_copies"] == sum(1 for t in train_truth.values() if t["copy_index"] > 0)
    assert built.info["duplicated_images"] == sum(1 for c in by_origin.values() if c > 1) > 0
    # Each copy is a near-exact variant of its original: close in pixels, with the recorded transform.
    originals = {t["origin"]: s for s in samples for t in [train_truth[s.key]] if t["copy_index"] == 0}
    for s in samples:
        t = train_truth[s.key]
        if t["copy_index"]:
            a = decode_image(s.image).astype(float) / 255
            b = decode_image(originals[t["origin"]].image).astype(float) / 255
            assert np.sqrt(((a - b) ** 2).mean()) < 0.25, (t, s.caption)
            transform = json.loads(t["transform"])
            assert s.image_ext == ("jpg" if "jpeg" in transform else "png")
        # Every copy carries the emoji's captions (its name first) for the multiple-captions mitigation.
        name = emoji_name(t["origin"])
        assert s.meta["captions"] == [name, *alternative_captions(t["origin"])]
    heldout = [s for s in read_shards(str(built.heldout)) if isinstance(s, Sample)]
    assert len(heldout) == built.info["heldout_samples"] > 0
    assert not {t["origin"] for t in truth if t["split"] == "heldout"} & set(by_origin)


def test_built_once(cache_dir: Path) -> None:
    first = build_twemoji(TINY_TWEMOJI, cache_dir / "corpus")
    stamp = (first.root / "corpus.json").stat().st_mtime_ns
    again = build_twemoji(TINY_TWEMOJI, cache_dir / "corpus")
    assert again.root == first.root and (again.root / "corpus.json").stat().st_mtime_ns == stamp


def test_render_composites_on_white() -> None:
    rgb = render(emoji_files()[0], 24)
    assert rgb.shape == (24, 24, 3) and rgb[0, 0].tolist() == [255, 255, 255]


def test_balanced_counts_populate_every_power_of_two_equally() -> None:
    config = InjectionConfig(min_count=2, max_count=128, balanced=True)
    counts = draw_counts(44, config, np.random.default_rng(0))
    assert sorted(Counter(counts.tolist()).items()) == [(2, 7), (4, 7), (8, 6), (16, 6), (32, 6), (64, 6), (128, 6)]
    assert counts.tolist() != sorted(counts.tolist())  # in random order


def test_an_explicit_design_gives_each_count_its_number_of_images() -> None:
    config = InjectionConfig(design_counts=(2, 32, 128), design_images=(3, 5, 4))
    assert config.duplicated(100) == 12
    counts = draw_counts(12, config, np.random.default_rng(0))
    assert sorted(Counter(counts.tolist()).items()) == [(2, 3), (32, 5), (128, 4)]
    with pytest.raises(ValueError, match="equal lengths"):
        InjectionConfig(design_counts=(2, 4), design_images=(3,))
    with pytest.raises(ValueError, match=">= 2"):
        InjectionConfig(design_counts=(1,), design_images=(3,))
    with pytest.raises(ConfigError, match="12 images, 10 exist"):  # one line and exit 2 from the CLI
        config.duplicated(10)
