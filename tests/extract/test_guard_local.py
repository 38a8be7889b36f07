"""The copy guard with local verification, on real photographs: generations that repeat a training
photograph cropped, rotated or in a larger frame are flagged with its key (the global similarity alone
misses them), unrelated images are not; from a dedup run, the run's own features are used."""

from __future__ import annotations

import numpy as np
import pytest

from memguard.common.cache import Cache
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.dedup.signals.local_params import LocalParams
from memguard.extract.guard import CopyGuard
from tests.dedup.layouts import Pair, write_folder
from tests.dedup.signals.test_local import CHINA, EDITS, FLOWER, _png

COPIES = {"rotate 12° filled": "china", "pasted at 55%": "china", "crop 60% off-centre": "flower"}


def _generations() -> list[np.ndarray]:
    edited = [np.asarray(EDITS[e](CHINA if key == "china" else FLOWER).convert("RGB")) for e, key in COPIES.items()]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (171, 256, 3), dtype=np.uint8)
    return [*edited, noise]


def test_edited_copies_of_training_photographs_are_flagged() -> None:
    training = [np.asarray(CHINA), np.asarray(FLOWER)]
    guard = CopyGuard(training, ["china", "flower"])
    verdicts = guard.check(_generations())
    assert [(v.is_copy, v.training_key) for v in verdicts[:3]] == [(True, k) for k in COPIES.values()]
    assert not verdicts[3].is_copy
    without = CopyGuard(training, ["china", "flower"], local=LocalParams(enabled=False)).check(_generations())
    assert sum(v.is_copy for v in without[:3]) < 3  # the global similarity alone misses some
    assert all(v.similarity <= w.similarity for v, w in zip(without[:3], verdicts[:3], strict=True))


def test_a_guard_from_a_dedup_run_verifies_with_the_runs_features(tmp_path, cache_dir) -> None:  # type: ignore[no-untyped-def]
    pairs = [Pair("china", _png(CHINA), "png", "a photograph"), Pair("flower", _png(FLOWER), "png", "another one")]
    corpus = open_corpus(CorpusSpec(kind="folder", path=str(write_folder(tmp_path / "photos", pairs, layout="txt"))), cache_dir)
    result = run_dedup(corpus, DedupParams(write_shards=False), out_dir=tmp_path / "out", cache=Cache(tmp_path / "cache"))
    guard = CopyGuard.from_dedup(result.out_dir)
    assert guard.bank is not None and guard.bank.counts().min() >= guard.local.min_inliers  # type: ignore[union-attr]
    verdicts = guard.check(_generations())
    assert [v.is_copy for v in verdicts] == [True, True, True, False]
    assert [v.training_key.rsplit("__", 1)[-1] for v in verdicts[:3]] == list(COPIES.values())
    off = run_dedup(corpus, DedupParams(write_shards=False, local=LocalParams(enabled=False)), out_dir=tmp_path / "off",
                    cache=Cache(tmp_path / "cache"))  # fmt: skip
    assert CopyGuard.from_dedup(off.out_dir).bank is None


@pytest.mark.parametrize("threshold", [0.975, 0.99])
def test_verified_similarities_reach_the_guard_threshold(threshold: float) -> None:
    guard = CopyGuard([np.asarray(CHINA)], ["china"], threshold=threshold)
    verdict = guard.check([np.asarray(EDITS["rotate 12° filled"](CHINA))])[0]
    assert verdict.similarity >= LocalParams().verified_similarity
    assert verdict.is_copy == (verdict.similarity >= threshold)
