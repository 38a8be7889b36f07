"""The faiss index the neighbour search runs over (``memguard/dedup/signals/neighbors.py``), and its
search: exact (``IndexFlatIP``) for small corpora, IVF or HNSW above ``exact_below`` vectors; on the GPU
when faiss sees one. The approximate kinds search in a PCA projection (``reduce_dim``; faiss's
``PCAMatrix``) and only propose candidates: every returned similarity is the exact cosine of the full
vectors. IVF's k-means is trained on a random sample (``train_per_list`` vectors per list). Embeddings must
be finite: faiss silently ignores NaN rows on add, so callers reject them first (``finite_rows``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from memguard.common.config import in_range, one_of
from memguard.common.mapped import release, rows_of

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexParams:
    """kind: auto | flat | ivf | hnsw. ``k`` neighbours per vector; pairs below ``min_sim`` are dropped
    (the floor: cluster thresholds at or above it reuse the cached search). ivf / hnsw: candidates are
    searched in a PCA projection to ``reduce_dim`` dimensions (0: the full vectors) and rescored exactly;
    ivf's k-means trains on ``train_per_list`` × nlist sampled vectors (seeded); ivf's ``encoding``:
    flat (float32 codes, the default) or sq8 (each component in 8 bits: a quarter of the index's memory,
    2.4 GB → 610 MB for 10^7 vectors of 64-d; the same pairs above the floor on 50,000 queries of the
    10^6 synthetic corpus, but top-k recall 0.63 inside dense groups of ~60 near-equal vectors, where
    8-bit codes reorder near-ties: bench/RESULTS.md)."""

    kind: str = "auto"
    k: int = 16
    min_sim: float = 0.75
    exact_below: int = 50_000
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 128
    use_gpu: bool = True
    reduce_dim: int = 64
    train_per_list: int = 64
    encoding: str = "flat"

    def __post_init__(self) -> None:
        one_of("dedup.image.index.kind", self.kind, INDEX_KINDS)
        one_of("dedup.image.index.encoding", self.encoding, ("sq8", "flat"))
        in_range("dedup.image.index.k", self.k, lo=1)
        in_range("dedup.image.index.min_sim", self.min_sim, lo=-1.0, hi=1.0)
        in_range("dedup.image.index.exact_below", self.exact_below, lo=0)
        in_range("dedup.image.index.reduce_dim", self.reduce_dim, lo=0)
        in_range("dedup.image.index.train_per_list", self.train_per_list, lo=39)  # faiss warns below 39
        if self.nlist is not None:
            in_range("dedup.image.index.nlist", self.nlist, lo=1)
        for name in ("nprobe", "hnsw_m", "ef_search"):
            in_range(f"dedup.image.index.{name}", getattr(self, name), lo=1)


def row_mask(rows: np.ndarray, test: Callable[[np.ndarray], np.ndarray], block: int = 65_536) -> np.ndarray:
    """``test`` (a block of rows → one bool per row) over every row, a block at a time: a whole-array
    temporary would be as large as a float32 copy of ``rows``, whose mapped pages are given back after
    each block."""
    out = np.empty(len(rows), bool)
    for start in range(0, len(rows), block):
        out[start : start + block] = test(rows[start : start + block])
        release(rows)
    return out


def finite_rows(embeddings: np.ndarray, block: int = 65_536) -> np.ndarray:
    """Rows without NaN/Inf."""
    return row_mask(embeddings, lambda rows: np.isfinite(rows).all(axis=1), block)


def index_kind(n: int, params: IndexParams) -> str:
    if params.kind == "auto":
        return "flat" if n < params.exact_below else "ivf"
    return params.kind


ADD_BLOCK = 65_536  # vectors projected and added to the index at once


def build_index(embeddings: np.ndarray, params: IndexParams, *, pca: faiss.VectorTransform | None = None) -> faiss.Index:
    """An inner-product index over unit vectors (inner product = cosine): of ``embeddings``, or of their
    PCA projection (``pca``), added a block at a time — ``embeddings`` may be memory-mapped, and no copy
    of all of them (or of their projection: 256 MB at 10^6) is made besides the index's own."""
    n = len(embeddings)
    dim = pca.d_out if pca is not None else embeddings.shape[1]

    def prepared(rows: np.ndarray) -> np.ndarray:
        return _projected(pca, rows) if pca is not None else np.ascontiguousarray(rows, dtype=np.float32)

    kind = index_kind(n, params)
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = params.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        ivf: faiss.IndexIVF
        if params.encoding == "sq8":
            ivf = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
        else:
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(prepared(_sample(embeddings, params.train_per_list * nlist)))
        ivf.nprobe = min(params.nprobe, nlist)
        index = ivf
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = params.ef_search
        index = hnsw
    else:
        raise ValueError(f"unknown index kind {params.kind!r}: auto, flat, ivf, hnsw")
    if params.use_gpu and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0 and kind != "hnsw":
        index = faiss.index_cpu_to_all_gpus(index)  # pragma: no cover - needs faiss-gpu and a GPU
    for start in range(0, n, ADD_BLOCK):
        index.add(prepared(embeddings[start : start + ADD_BLOCK]))
        release(embeddings)
    return index


def _sample(x: np.ndarray, size: int) -> np.ndarray:
    """``size`` rows of ``x`` drawn at random (seeded), in row order; read from the file of a mapped
    ``x`` (``rows_of``: through the mapping, 50,000 scattered rows mapped all of it)."""
    if size >= len(x):
        return x
    return rows_of(x, np.sort(np.random.default_rng(0).choice(len(x), size, replace=False)))


def _pca(x: np.ndarray, dim: int) -> faiss.PCAMatrix:
    pca = faiss.PCAMatrix(x.shape[1], dim)
    pca.train(np.ascontiguousarray(_sample(x, max(50_000, 4 * dim)), dtype=np.float32))
    return pca


def _projected(pca: faiss.VectorTransform, a: np.ndarray, block: int = 65_536) -> np.ndarray:
    """``a`` in the PCA projection, rows renormalised (inner product is a cosine again), a block of rows
    at a time (``a`` may be memory-mapped: its pages are given back after each block)."""
    y = np.empty((len(a), pca.d_out), np.float32)
    for start in range(0, len(a), block):
        y[start : start + block] = pca.apply(np.ascontiguousarray(a[start : start + block], dtype=np.float32))
        release(a)
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return y


def exact_cosines(x: np.ndarray, queries: np.ndarray, idx: np.ndarray, *, block: int = 1024) -> np.ndarray:
    """``queries[i] · x[idx[i, j]]`` (NaN-free; -inf where idx is -1), a block of queries at a time. The
    candidates' rows are read from the file of a memory-mapped ``x`` (``rows_of``): through the mapping,
    the scattered rows of a few blocks mapped all of it."""
    sims = np.full(idx.shape, -np.inf, np.float32)
    for start in range(0, len(idx), block):
        rows = idx[start : start + block]
        found = rows >= 0
        vectors = rows_of(x, np.where(found, rows, 0).reshape(-1)).reshape(*rows.shape, -1)
        dots = np.einsum("bd,bkd->bk", queries[start : start + block], vectors)
        sims[start : start + block] = np.where(found, dots, -np.inf)
    return sims


@dataclass
class SearchIndex:
    """An index over ``vectors`` and its search: a block of queries and k → (similarities, indices), each
    (block, k), most similar first, -1 where fewer than k exist. Similarities are exact cosines whatever
    the index kind: an index of a PCA projection (``pca``) only proposes candidates, rescored against
    ``vectors`` (which may be memory-mapped, or a view of memory-mapped rows). Saved once and loaded by
    each task of a distributed search (``save``, ``load``)."""

    index: faiss.Index
    pca: faiss.VectorTransform | None
    vectors: np.ndarray

    def __call__(self, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(block, dtype=np.float32)
        if self.pca is None:
            return self.index.search(queries, k)
        _, idx = self.index.search(_projected(self.pca, block), k)
        sims = exact_cosines(self.vectors, queries, idx)
        order = np.argsort(-sims, axis=1, kind="stable")
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)

    def save(self, stem: str) -> None:
        """``<stem>.faiss`` (and ``<stem>.pca``): what ``load`` needs besides the vectors."""
        on_gpu = hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(self.index).__name__
        faiss.write_index(faiss.index_gpu_to_cpu(self.index) if on_gpu else self.index, f"{stem}.faiss")
        if self.pca is not None:
            faiss.write_VectorTransform(self.pca, f"{stem}.pca")

    @classmethod
    def load(cls, stem: str, vectors: np.ndarray) -> SearchIndex:
        # Read whole, not memory-mapped: searching mapped inverted lists took 30% more CPU (bench/RESULTS.md).
        index = faiss.read_index(f"{stem}.faiss")
        pca = faiss.read_VectorTransform(f"{stem}.pca") if Path(f"{stem}.pca").exists() else None
        return cls(index, pca, vectors)


def searcher(embeddings: np.ndarray, params: IndexParams) -> SearchIndex:
    """An index over ``embeddings`` (finite rows: checked) and its search (``SearchIndex``). Above
    ``exact_below`` the index holds a PCA projection; ``embeddings`` may then be memory-mapped: the
    projection is computed a block at a time, and the search rescores against it in place."""
    if not finite_rows(embeddings).all():
        raise ValueError("embeddings contain NaN/Inf rows: reject them before indexing")
    reduce = index_kind(len(embeddings), params) != "flat" and 0 < params.reduce_dim < embeddings.shape[1]
    if not reduce or len(embeddings) <= params.reduce_dim:  # a PCA needs more rows than it keeps dimensions
        return SearchIndex(build_index(embeddings, params), None, embeddings)
    # Why by hand: faiss's IndexRefineFlat would rescore too, but it keeps a second full copy of every
    # vector (the corpus's largest array) inside the index.
    pca = _pca(embeddings, params.reduce_dim)
    return SearchIndex(build_index(embeddings, params, pca=pca), pca, embeddings)
