"""CopyGuard refuses nonsense with a clear error and accepts what diffusers pipelines return."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from memguard.common.cache import Cache
from memguard.corpus.sample import Sample
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.validate import decode_image
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.extract.guard import CopyGuard, as_rgb_uint8
from tests.conftest import TINY_TWEMOJI


def _images(n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(n)]


def test_every_layout_diffusers_returns_gives_the_same_pixels() -> None:
    rgb = _images(1)[0]
    floats = rgb.astype(np.float32) / 255.0
    for form in (
        rgb,
        Image.fromarray(rgb),
        floats,
        np.moveaxis(floats, -1, 0),  # CHW
        torch.from_numpy(np.moveaxis(floats, -1, 0)),
        np.concatenate([rgb, np.full((16, 16, 1), 255, np.uint8)], axis=-1),  # opaque RGBA
    ):
        np.testing.assert_array_equal(as_rgb_uint8(form), rgb)
    gray = as_rgb_uint8(rgb[..., 0])
    assert gray.shape == (16, 16, 3) and (gray[..., 0] == gray[..., 2]).all()
    clear = np.zeros((16, 16, 4), np.uint8)  # fully transparent: white, as the decoder composites
    assert (as_rgb_uint8(clear) == 255).all()


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.full((16, 16, 3), np.nan, np.float32), "NaN"),
        (np.full((16, 16, 3), -1.0, np.float32), r"\[0, 1\]"),
        (np.zeros((2, 16, 16, 3), np.uint8), "shape"),
        (np.zeros((16, 16, 3), np.int64), "dtype"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((0, 32, 3), np.uint8), "empty"),
        (np.zeros((32, 0), np.float32), "empty"),
        (Image.new("RGB", (0, 0)), "empty"),
    ],
)
def test_nonsense_images_are_refused(image: np.ndarray, match: str) -> None:
    guard = CopyGuard(_images(), ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=match):
        guard.check([image])


def test_nonsense_setup_is_refused() -> None:
    with pytest.raises(ValueError, match="keys"):
        CopyGuard(_images(3), ["a", "b"])
    with pytest.raises(ValueError, match="keys"):
        CopyGuard(_images(2), ["a", "b", "c"])
    for threshold in (float("nan"), 2.0, -5.0):
        with pytest.raises(ValueError, match="threshold"):
            CopyGuard(_images(2), ["a", "b"], threshold=threshold)

    class NaNEmbedder:
        def embed(self, images: list[np.ndarray]) -> np.ndarray:
            return np.full((len(images), 8), np.nan, np.float32)

    with pytest.raises(ValueError, match="non-finite"):
        CopyGuard(_images(2), ["a", "b"], embedder=NaNEmbedder())


def test_a_copy_is_found_and_an_empty_batch_is_fine() -> None:
    train = _images()
    guard = CopyGuard(train, ["a", "b", "c", "d"])
    verdicts = guard.check([train[2].astype(np.float32) / 255.0, np.full((16, 16, 3), 128, np.uint8)])
    assert verdicts[0].is_copy and verdicts[0].training_key == "c"
    assert not verdicts[1].is_copy
    assert guard.check([]) == []


def test_a_guard_from_a_dedup_run_reuses_its_embeddings(cache_dir: Path, tmp_path: Path) -> None:
    corpus = open_corpus(CorpusSpec(twemoji=TINY_TWEMOJI), cache_dir)
    run_dedup(corpus, DedupParams(write_shards=False), out_dir=tmp_path / "out", cache=Cache(tmp_path / "cache"))
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    kept = [r["key"] for r in rows if r["status"] == "kept"]
    removed = [r for r in rows if r["status"] == "duplicate"]
    guard = CopyGuard.from_dedup(tmp_path / "out")
    assert guard.keys == kept and guard.embedder.name == "robust"
    images = {s.key: decode_image(s.image) for s in corpus.items() if isinstance(s, Sample)}
    # The cached vectors are the ones the guard's own embedder computes from the images.
    direct = CopyGuard([images[k] for k in kept[:5]], kept[:5])
    np.testing.assert_allclose(guard.vectors[:5], direct.vectors, atol=1e-6)
    # A removed duplicate is a copy of the kept sample dedup joined it to (or of one as close).
    verdicts = guard.check([images[r["key"]] for r in removed[:5]])
    assert all(v.is_copy for v in verdicts)
    assert len(CopyGuard.from_dedup(tmp_path / "out", kept_only=False).keys) == len(kept) + len(removed)
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="rerun dedup"):
        CopyGuard.from_dedup(tmp_path / "out")
