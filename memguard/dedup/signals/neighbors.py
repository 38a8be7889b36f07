"""Nearest neighbours of image embeddings with faiss → candidate duplicate pairs with cosine similarity.

Exact (``IndexFlatIP``) for small corpora, IVF or HNSW above ``exact_below`` vectors; on the GPU when
faiss sees one. The approximate kinds search in a PCA projection (``reduce_dim``; faiss's ``PCAMatrix``)
and only propose candidates: every returned similarity is the exact cosine of the full vectors. IVF's
k-means is trained on a random sample (``train_per_list`` vectors per list). Embeddings must be finite:
faiss silently ignores NaN rows on add, so callers reject them first (``finite_rows``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np

from memguard.common.config import in_range, one_of
from memguard.common.mapped import release
from memguard.dedup.signals.pairs import code_pairs, pair_codes, pair_cosines
from memguard.dedup.signals.views import SINGLE, ViewLayout, view, views_equal

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexParams:
    """kind: auto | flat | ivf | hnsw. ``k`` neighbours per vector; pairs below ``min_sim`` are dropped
    (the floor: cluster thresholds at or above it reuse the cached search). ivf / hnsw: candidates are
    searched in a PCA projection to ``reduce_dim`` dimensions (0: the full vectors) and rescored exactly;
    ivf's k-means trains on ``train_per_list`` × nlist sampled vectors (seeded)."""

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

    def __post_init__(self) -> None:
        one_of("dedup.image.index.kind", self.kind, INDEX_KINDS)
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


def build_index(embeddings: np.ndarray, params: IndexParams) -> faiss.Index:
    """An inner-product index over unit vectors (inner product = cosine), of the full vectors."""
    n, dim = embeddings.shape
    kind = index_kind(n, params)
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = params.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(_sample(embeddings, params.train_per_list * nlist))
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
    index.add(embeddings)
    return index


def _sample(x: np.ndarray, size: int) -> np.ndarray:
    if size >= len(x):
        return x
    sample = x[np.sort(np.random.default_rng(0).choice(len(x), size, replace=False))]
    release(x)
    return sample


def _pca(x: np.ndarray, dim: int) -> faiss.PCAMatrix:
    pca = faiss.PCAMatrix(x.shape[1], dim)
    pca.train(np.ascontiguousarray(_sample(x, max(50_000, 4 * dim)), dtype=np.float32))
    return pca


def _projected(pca: faiss.PCAMatrix, a: np.ndarray, block: int = 65_536) -> np.ndarray:
    """``a`` in the PCA projection, rows renormalised (inner product is a cosine again), a block of rows
    at a time (``a`` may be memory-mapped: its pages are given back after each block)."""
    y = np.empty((len(a), pca.d_out), np.float32)
    for start in range(0, len(a), block):
        y[start : start + block] = pca.apply(np.ascontiguousarray(a[start : start + block], dtype=np.float32))
        release(a)
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return y


def exact_cosines(x: np.ndarray, queries: np.ndarray, idx: np.ndarray, *, block: int = 1024) -> np.ndarray:
    """``queries[i] · x[idx[i, j]]`` (NaN-free; -inf where idx is -1), a block of queries at a time."""
    sims = np.full(idx.shape, -np.inf, np.float32)
    for start in range(0, len(idx), block):
        rows = idx[start : start + block]
        found = rows >= 0
        vectors = x[np.where(found, rows, 0)]
        dots = np.einsum("bd,bkd->bk", queries[start : start + block], vectors)
        sims[start : start + block] = np.where(found, dots, -np.inf)
        release(x, queries)
    return sims


QUERY_BLOCK = 65_536  # a multiple of faiss's own query block (4,096): results do not depend on it

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def searcher(embeddings: np.ndarray, params: IndexParams) -> Search:
    """An index over ``embeddings`` and its search: a block of queries and k → (similarities, indices),
    each (block, k), most similar first, -1 where fewer than k exist. Similarities are exact cosines
    whatever the index kind."""
    if not finite_rows(embeddings).all():
        raise ValueError("embeddings contain NaN/Inf rows: reject them before indexing")
    reduce = index_kind(len(embeddings), params) != "flat" and 0 < params.reduce_dim < embeddings.shape[1]
    if not reduce:
        index = build_index(embeddings, params)
        return lambda block, k: index.search(np.ascontiguousarray(block, dtype=np.float32), k)
    # Why by hand: faiss's IndexRefineFlat would rescore too, but it keeps a second full copy of every
    # vector (the corpus's largest array) inside the index.
    pca = _pca(embeddings, params.reduce_dim)
    projected_index = build_index(_projected(pca, embeddings), params)  # the index keeps its own copy

    def search(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, idx = projected_index.search(_projected(pca, block), k)
        sims = exact_cosines(embeddings, np.ascontiguousarray(block, dtype=np.float32), idx)
        order = np.argsort(-sims, axis=1, kind="stable")
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)

    return search


def knn_blocks(
    embeddings: np.ndarray, params: IndexParams, queries: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first query row, similarities, indices) for consecutive blocks of queries, each (block, k), most
    similar first; -1 where fewer than k neighbours exist. Similarities are exact cosines whatever the
    index kind. By blocks so that no (N, k) array outlives its block at 10^6+ samples."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    search = searcher(embeddings, params)
    q = embeddings if queries is None else queries
    k = min(params.k + (1 if queries is None else 0), len(embeddings))
    for start in range(0, len(q), QUERY_BLOCK):
        sims, idx = search(q[start : start + QUERY_BLOCK], k)
        yield start, sims, idx


def knn(
    embeddings: np.ndarray, params: IndexParams, queries: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), each (Nq, k): ``knn_blocks`` put together."""
    blocks = list(knn_blocks(embeddings, params, queries))
    return np.concatenate([b[1] for b in blocks]), np.concatenate([b[2] for b in blocks])


@dataclass(frozen=True)
class Widen:
    """Pairs of two ``rows`` (a mask) are kept down to ``floor`` instead of ``min_sim``: the samples a
    second stage can still verify (memguard/dedup/signals/local.py: those with keypoints)."""

    rows: np.ndarray
    floor: float


def _kept(widen: Widen | None, sims: np.ndarray, *, rows: np.ndarray, cols: np.ndarray, min_sim: float) -> np.ndarray:
    """Which found pairs (rows, cols, sims) a search keeps: ≥ min_sim, or ≥ the floor between two
    widened rows."""
    if widen is None:
        return sims >= min_sim
    widened = widen.rows[rows] & widen.rows[np.maximum(cols, 0)]
    return (sims >= min_sim) | (widened & (sims >= widen.floor))


def neighbor_pairs(
    embeddings: np.ndarray, params: IndexParams, layout: ViewLayout = SINGLE, *, widen: Widen | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, among each vector's k nearest with cosine ≥ min_sim (or, with ``widen``,
    down to its floor between two of its rows), and their cosine (as found from the first of the two to
    list the other). Multi-view rows: one index per view that pairs compare against, searched by the
    views compared with it, and each pair found is rescored by its best allowed view pair
    (``pair_similarity``)."""
    n = len(embeddings)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    if not layout.single:
        return _multi_view_pairs(embeddings, params, layout, widen=widen)
    codes, values = [], []
    for start, sims, idx in knn_blocks(embeddings, params):
        rows = np.repeat(np.arange(start, start + len(idx)), idx.shape[1])
        cols, vals = idx.ravel(), sims.ravel()
        keep = (cols >= 0) & (cols != rows) & _kept(widen, vals, rows=rows, cols=cols, min_sim=params.min_sim)
        codes.append(pair_codes(rows[keep], cols[keep], n))
        values.append(vals[keep])
    found, first = np.unique(np.concatenate(codes), return_index=True)
    return code_pairs(found, n), np.concatenate(values)[first].astype(np.float32)


def finite_neighbor_pairs(
    embeddings: np.ndarray, params: IndexParams, layout: ViewLayout = SINGLE, *, widen: Widen | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``neighbor_pairs`` among the finite rows only (indices refer to the full embedding array)."""
    mask = finite_rows(embeddings)
    if mask.all():  # the usual case: no copy of the corpus's largest array
        return neighbor_pairs(embeddings, params, layout, widen=widen)
    finite = np.flatnonzero(mask)
    widened = Widen(widen.rows[finite], widen.floor) if widen is not None else None
    pairs, sims = neighbor_pairs(embeddings[finite], params, layout, widen=widened)
    return finite[pairs] if len(pairs) else pairs, sims


PlannedSearch = tuple[int, tuple[int, int] | None, np.ndarray | None, int, np.ndarray | None]


def planned_searches(embeddings: np.ndarray, layout: ViewLayout) -> list[PlannedSearch]:
    """(indexed view, its gate, the rows it holds or None for all, query view, query rows or None for
    all) per search the layout's pairs need, those of one index consecutive; searches with no rows on
    either side are left out. Each pair of views is compared once (the robust grey view's gate and its
    query rows ask the same question)."""
    equal: dict[frozenset[int], np.ndarray] = {}

    def rows(x: int, y: int, same: bool) -> np.ndarray:
        key = frozenset((x, y))
        if key not in equal:
            equal[key] = row_mask(embeddings, lambda rows: views_equal(rows, layout, (x, y)), QUERY_BLOCK)
        return np.flatnonzero(equal[key] == same)

    out = []
    for pair in sorted(layout.pairs, key=lambda p: (p.b, p.gate or (-1, -1), p.a)):
        indexed = None if pair.gate is None else rows(*pair.gate, same=True)
        unless = pair.search_unless_equal
        queries = None if unless is None else rows(pair.a, unless, same=False)
        if all(r is None or len(r) for r in (indexed, queries)):
            out.append((pair.b, pair.gate, indexed, pair.a, queries))
    return out


def _multi_view_pairs(
    embeddings: np.ndarray, params: IndexParams, layout: ViewLayout, *, widen: Widen | None
) -> tuple[np.ndarray, np.ndarray]:
    """One index per indexed view (and gate: only the rows whose gate is open), searched only by the views
    compared with it, from the rows that need it (``ViewPair.search_unless_equal``) — the robust layout:
    the base view's index by five query views, the trim and grey views searched only from images with
    something to trim or some colour. Each pair found is rescored by its best allowed view pair."""
    n = len(embeddings)
    # A layout that refines pairs (robust: alignment) may lift a pair found below min_sim above it.
    floor = min(params.min_sim, layout.refine_floor) if layout.refine else params.min_sim
    codes = [np.zeros(0, np.int64)]
    built: tuple[int, tuple[int, int] | None] | None = None
    for b, gate, indexed, a, queries in planned_searches(embeddings, layout):
        if (b, gate) != built:  # consecutive searches of one index share it
            held = view(embeddings, layout, b) if indexed is None else view(embeddings, layout, b)[indexed]
            search, built = searcher(np.ascontiguousarray(held, np.float32), params), (b, gate)
            k = min(params.k + 1, len(held))  # a sample's own row comes back too
        total = n if queries is None else len(queries)
        for start in range(0, total, QUERY_BLOCK):
            if queries is None:  # a slice of the (memory-mapped) rows, no copy
                rows_q = np.arange(start, min(start + QUERY_BLOCK, n))
                sims, idx = search(view(embeddings[start : start + QUERY_BLOCK], layout, a), k)
            else:
                rows_q = queries[start : start + QUERY_BLOCK]
                sims, idx = search(view(embeddings, layout, a)[rows_q], k)
            found = idx.ravel()
            cols = found if indexed is None else np.where(found >= 0, indexed[np.maximum(found, 0)], -1)
            rows = np.repeat(rows_q, idx.shape[1])
            keep = (cols >= 0) & (cols != rows) & _kept(widen, sims.ravel(), rows=rows, cols=cols, min_sim=floor)
            codes.append(np.unique(pair_codes(rows[keep], cols[keep], n)))
            release(embeddings)
    pairs = code_pairs(np.unique(np.concatenate(codes)), n)
    sims = pair_cosines(embeddings, pairs[:, 0], pairs[:, 1], layout=layout)
    keep = _kept(widen, sims, rows=pairs[:, 0], cols=pairs[:, 1], min_sim=params.min_sim)  # a gated pair (grey) found may not count
    return pairs[keep], sims[keep]
