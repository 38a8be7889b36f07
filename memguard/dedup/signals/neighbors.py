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
from pathlib import Path
from typing import Protocol

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


def _projected(pca: faiss.VectorTransform, a: np.ndarray, block: int = 65_536) -> np.ndarray:
    """``a`` in the PCA projection, rows renormalised (inner product is a cosine again), a block of rows
    at a time (``a`` may be memory-mapped: its pages are given back after each block)."""
    y = np.empty((len(a), pca.d_out), np.float32)
    for start in range(0, len(a), block):
        y[start : start + block] = pca.apply(np.ascontiguousarray(a[start : start + block], dtype=np.float32))
        release(a)
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return y


RELEASE_EVERY = 16  # blocks of exact rescoring between two releases of the mapped rows they gathered


def exact_cosines(x: np.ndarray, queries: np.ndarray, idx: np.ndarray, *, block: int = 1024) -> np.ndarray:
    """``queries[i] · x[idx[i, j]]`` (NaN-free; -inf where idx is -1), a block of queries at a time. The
    pages of a memory-mapped ``x`` are given back every ``RELEASE_EVERY`` blocks (every block: faulting
    the same rows in again each block cost time in a 10^6-vector search; bench/RESULTS.md)."""
    sims = np.full(idx.shape, -np.inf, np.float32)
    for n, start in enumerate(range(0, len(idx), block)):
        rows = idx[start : start + block]
        found = rows >= 0
        vectors = x[np.where(found, rows, 0)]
        dots = np.einsum("bd,bkd->bk", queries[start : start + block], vectors)
        sims[start : start + block] = np.where(found, dots, -np.inf)
        if n % RELEASE_EVERY == RELEASE_EVERY - 1:
            release(x, queries)
    release(x, queries)
    return sims


QUERY_BLOCK = 65_536  # a multiple of faiss's own query block (4,096): results do not depend on it

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


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
        return SearchIndex(build_index(np.ascontiguousarray(embeddings, np.float32), params), None, embeddings)
    # Why by hand: faiss's IndexRefineFlat would rescore too, but it keeps a second full copy of every
    # vector (the corpus's largest array) inside the index.
    pca = _pca(embeddings, params.reduce_dim)
    return SearchIndex(build_index(_projected(pca, embeddings), params), pca, embeddings)


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
    embeddings: np.ndarray,
    params: IndexParams,
    layout: ViewLayout = SINGLE,
    *,
    widen: Widen | None = None,
    tasks: SearchTasks | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, among each vector's k nearest with cosine ≥ min_sim (or, with ``widen``,
    down to its floor between two of its rows), and their cosine (as found from the first of the two to
    list the other). Multi-view rows: one index per view that pairs compare against, searched by the
    views compared with it, and each pair found is rescored by its best allowed view pair
    (``pair_similarity``). With ``tasks``, a search of many queries runs as tasks over blocks of them
    (``memguard/dedup/signals/neighbor_tasks.py``); the pairs are the same either way."""
    n = len(embeddings)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    # A layout that refines pairs (robust: alignment) may lift a pair found below min_sim above it.
    floor = min(params.min_sim, layout.refine_floor) if layout.refine else params.min_sim
    plans = planned_searches(embeddings, layout)
    if tasks is not None and tasks.worth_it(plans, n):
        codes, values = tasks.found(embeddings, plans, params=params, layout=layout, floor=floor, widen=widen)
    else:
        codes, values = _found_in_process(embeddings, plans, params=params, layout=layout, floor=floor, widen=widen)
    found, first = np.unique(codes, return_index=True)
    pairs = code_pairs(found, n)
    if layout.single:  # the similarity the search found the pair with
        return pairs, values[first].astype(np.float32)
    sims = pair_cosines(embeddings, pairs[:, 0], pairs[:, 1], layout=layout)
    keep = _kept(widen, sims, rows=pairs[:, 0], cols=pairs[:, 1], min_sim=params.min_sim)  # a gated pair (grey) found may not count
    return pairs[keep], sims[keep]


class SearchTasks(Protocol):
    """How a search runs as tasks (``memguard/dedup/signals/neighbor_tasks.py``)."""

    def worth_it(self, plans: list[PlannedSearch], n: int) -> bool: ...

    def found(
        self,
        embeddings: np.ndarray,
        plans: list[PlannedSearch],
        *,
        params: IndexParams,
        layout: ViewLayout,
        floor: float,
        widen: Widen | None,
    ) -> tuple[np.ndarray, np.ndarray]: ...


def finite_neighbor_pairs(
    embeddings: np.ndarray,
    params: IndexParams,
    layout: ViewLayout = SINGLE,
    *,
    widen: Widen | None = None,
    tasks: SearchTasks | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``neighbor_pairs`` among the finite rows only (indices refer to the full embedding array)."""
    mask = finite_rows(embeddings)
    if mask.all():  # the usual case: no copy of the corpus's largest array
        return neighbor_pairs(embeddings, params, layout, widen=widen, tasks=tasks)
    finite = np.flatnonzero(mask)
    widened = Widen(widen.rows[finite], widen.floor) if widen is not None else None
    pairs, sims = neighbor_pairs(embeddings[finite], params, layout, widen=widened, tasks=tasks)
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


@dataclass(frozen=True)
class QueryBlocks:
    """One planned search's queries from ``lo`` to ``hi`` (positions among its query rows), and what a
    found pair must reach to be kept."""

    query_view: int
    queries: np.ndarray | None  # the query rows, None: every row
    lo: int
    hi: int
    k: int  # neighbours asked of each query (its own row comes back too)
    floor: float
    widen: Widen | None


def found_codes(
    embeddings: np.ndarray, search: Search, indexed: np.ndarray | None, *, layout: ViewLayout, blocks: QueryBlocks
) -> tuple[np.ndarray, np.ndarray]:
    """(pair codes, similarities as found) of one planned search's queries ``blocks.lo:blocks.hi``, a
    ``QUERY_BLOCK`` at a time (``lo`` a multiple of it: the blocks, and so the results, are those of a
    search of every query in one process); each block's codes unique, first finds kept."""
    n, k = len(embeddings), blocks.k
    codes, values = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for start in range(blocks.lo, blocks.hi, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, blocks.hi)
        if blocks.queries is None:  # a slice of the (memory-mapped) rows, no copy
            rows_q = np.arange(start, stop)
            sims, idx = search(view(embeddings[start:stop], layout, blocks.query_view), k)
        else:
            rows_q = blocks.queries[start:stop]
            sims, idx = search(view(embeddings, layout, blocks.query_view)[rows_q], k)
        found = idx.ravel()
        cols = found if indexed is None else np.where(found >= 0, indexed[np.maximum(found, 0)], -1)
        rows = np.repeat(rows_q, idx.shape[1])
        vals = sims.ravel()
        keep = (cols >= 0) & (cols != rows) & _kept(blocks.widen, vals, rows=rows, cols=cols, min_sim=blocks.floor)
        unique, first = np.unique(pair_codes(rows[keep], cols[keep], n), return_index=True)
        codes.append(unique)
        values.append(vals[keep][first])
        release(embeddings)
    return np.concatenate(codes), np.concatenate(values)


def _found_in_process(
    embeddings: np.ndarray,
    plans: list[PlannedSearch],
    *,
    params: IndexParams,
    layout: ViewLayout,
    floor: float,
    widen: Widen | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every planned search in this process: one index per indexed view (and gate: only the rows whose
    gate is open), searched only by the views compared with it, from the rows that need it
    (``ViewPair.search_unless_equal``) — the robust layout: the base view's index by five query views,
    the trim and grey views searched only from images with something to trim or some colour."""
    n = len(embeddings)
    codes, values = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    built: tuple[int, tuple[int, int] | None] | None = None
    search: SearchIndex | None = None
    for b, gate, indexed, a, queries in plans:
        if (b, gate) != built or search is None:  # consecutive searches of one index share it
            held = view(embeddings, layout, b) if indexed is None else view(embeddings, layout, b)[indexed]
            search, built = searcher(np.ascontiguousarray(held, np.float32), params), (b, gate)
        total = n if queries is None else len(queries)
        k = min(params.k + 1, n if indexed is None else len(indexed))  # a sample's own row comes back too
        blocks = QueryBlocks(a, queries, 0, total, k, floor, widen)
        found, vals = found_codes(embeddings, search, indexed, layout=layout, blocks=blocks)
        codes.append(found)
        values.append(vals)
    return np.concatenate(codes), np.concatenate(values)
