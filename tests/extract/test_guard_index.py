"""The guard's indexed search finds what the exhaustive one finds: on robust embeddings of the emoji, the
edited copies' best matches, and nothing for images that are no copies."""

from __future__ import annotations

import numpy as np
import pytest

from bench.edits import TRANSFORMS, edit
from memguard.corpus.twemoji import emoji_files, render
from memguard.dedup.signals.embed import EmbedderParams, make_embedder, view_layout
from memguard.dedup.signals.neighbors import IndexParams
from memguard.dedup.signals.views import best_match
from memguard.extract.guard_index import GuardIndexParams, TrainingIndex


@pytest.fixture(scope="module")
def emoji_vectors() -> tuple[np.ndarray, list[np.ndarray]]:
    files = emoji_files()[:1500]
    images = [render(f, 64) for f in files]
    return make_embedder(EmbedderParams()).embed(images), images


def test_the_index_finds_the_exhaustive_best_match_of_edited_copies(emoji_vectors) -> None:  # type: ignore[no-untyped-def]
    vectors, images = emoji_vectors
    layout = view_layout("robust")
    rng = np.random.default_rng(0)
    originals = rng.choice(len(images), 120, replace=False)
    names = sorted(TRANSFORMS)
    edited = [np.asarray(edit(images[i], names[n % len(names)], rng)) for n, i in enumerate(originals)]
    queries = make_embedder(EmbedderParams()).embed(edited)
    # IVF in a 64-d PCA projection with few lists for every index of 500 rows or more, as at scale.
    index = TrainingIndex(vectors, layout, GuardIndexParams(k=32, exact_below=0, index=IndexParams(kind="auto", exact_below=500, nlist=16, nprobe=4)))
    assert not index.exhaustive
    sims, rows = index.best(queries)
    exact_sims, exact_rows = best_match(queries, vectors, layout)
    assert (sims <= exact_sims + 1e-5).all()  # a candidate is scored exactly: never above the true best
    copies = exact_sims >= 0.975
    assert copies.sum() >= 60, copies.sum()
    found = (sims >= 0.975) & copies
    assert found.sum() / copies.sum() >= 0.99
    assert (rows[found] == exact_rows[found]).mean() >= 0.99


def test_below_exact_below_the_search_is_exhaustive(emoji_vectors) -> None:  # type: ignore[no-untyped-def]
    vectors, _ = emoji_vectors
    layout = view_layout("robust")
    index = TrainingIndex(vectors[:200], layout, GuardIndexParams(exact_below=1000))
    assert index.exhaustive
    sims, rows = index.best(vectors[200:260])
    exact = best_match(vectors[200:260], vectors[:200], layout)
    assert np.array_equal(sims, exact[0]) and np.array_equal(rows, exact[1])
