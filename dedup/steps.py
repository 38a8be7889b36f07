"""The expensive dedup steps, each a function from cached inputs to a folder of outputs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from dedup.ingest import valid_samples
from dedup.io.corpus import Corpus
from dedup.io.validate import decode_image
from dedup.signals.embed import EmbedderParams, make_embedder
from dedup.signals.minhash import MinHasher, MinHashParams
from dedup.signals.neighbors import IndexParams, finite_rows, neighbor_pairs

MIN_CAPTION_CHARS = 3  # shorter normalised captions ("a", "") never enter the caption index


def long_enough(captions: list[str]) -> np.ndarray:
    """Normalised captions that may join a caption signal at all (MinHash or embeddings)."""
    return np.array([len(c) >= MIN_CAPTION_CHARS for c in captions], dtype=bool)


def compute_signatures(captions: list[str], params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """(signatures, usable): captions with no shingles or under MIN_CAPTION_CHARS are not usable."""
    signatures, empty = MinHasher(params).signatures(captions)
    return signatures, ~empty & long_enough(captions)


def compute_embeddings(corpus: Corpus, units: pa.Table, params: EmbedderParams) -> np.ndarray:
    """Embeddings in sample_index order; decoding is the same as ingest's, so the rows line up."""
    embedder = make_embedder(params)
    n = int(count_valid(units))
    rows: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    for _, sample in tqdm(
        valid_samples(corpus, units), total=n, desc=f"embed ({params.kind})", unit="img", mininterval=1.0
    ):
        batch.append(decode_image(sample.image, corpus.limits))
        if len(batch) >= params.batch_size:
            rows.append(embedder.embed(batch))
            batch = []
    if batch:
        rows.append(embedder.embed(batch))
    if not rows:
        return np.zeros((0, 1), np.float32)
    out = np.concatenate(rows).astype(np.float32)
    if len(out) != n:
        raise RuntimeError(f"embedded {len(out)} images, ingest found {n} valid samples")
    return out


def count_valid(units: pa.Table) -> int:
    return sum(1 for i in units.column("sample_index").to_pylist() if i >= 0)


def compute_neighbor_pairs(embeddings: np.ndarray, params: IndexParams) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour pairs among finite embeddings (indices refer to the full embedding array)."""
    finite = np.flatnonzero(finite_rows(embeddings))
    pairs, sims = neighbor_pairs(embeddings[finite], params)
    return finite[pairs] if len(pairs) else pairs, sims
