"""The audit's reference set: one entry per raw duplicate cluster, with every raw copy of it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from memguard.common.cache import Cache
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.diffusion.images import decode_items
from memguard.extract.reference import raw_image_set, reference_set
from tests.conftest import TINY_TWEMOJI


def test_reference_groups_every_raw_copy_under_its_keeper(cache_dir: Path, tmp_path: Path) -> None:
    corpus = open_corpus(CorpusSpec(twemoji=TINY_TWEMOJI), cache_dir)
    cleaned = run_dedup(corpus, DedupParams(), out_dir=tmp_path / "dedup", cache=Cache(cache_dir))
    rows = pq.read_table(cleaned.manifest).to_pylist()
    trained = [r for r in rows if r["status"] in ("kept", "duplicate")]
    reference = reference_set(cleaned, 8, cache_dir=cache_dir, raw=raw_image_set(corpus, 8, cache_dir=cache_dir))
    copies, copy_of = reference.training_copies()
    assert len(copies) == len(trained) and len(reference.keys) == sum(r["status"] == "kept" for r in rows)
    assert np.array_equal(np.bincount(copy_of, minlength=len(reference.keys)), reference.dup_counts)
    for i in range(len(reference.keys)):  # the keeper itself is one of its copies
        assert (reference.copies_of(i) == reference.images[i]).all(axis=(1, 2, 3)).any()
    with pytest.raises(ValueError, match="not the corpus"):
        reference_set(cleaned, 8, cache_dir=cache_dir, raw=decode_items(itertools.islice(corpus.items(), 10), 8))
    bare = reference_set(cleaned, 8, cache_dir=cache_dir)
    assert np.array_equal(bare.training_copies()[1], np.arange(len(bare.keys)))
