"""Nearest neighbours of image embeddings with faiss → candidate duplicate pairs with cosine similarity:
the planned searches of a view layout, run in this process or as tasks (``neighbor_tasks.py``), over the
index and search of ``neighbor_index.py`` (whose names this module also serves, as callers import them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from memguard.common.mapped import release
from memguard.dedup.signals.neighbor_index import IndexParams as IndexParams
from memguard.dedup.signals.neighbor_index import SearchIndex as SearchIndex
from memguard.dedup.signals.neighbor_index import build_index as build_index
from memguard.dedup.signals.neighbor_index import finite_rows as finite_rows
from memguard.dedup.signals.neighbor_index import row_mask, searcher
from memguard.dedup.signals.pairs import code_pairs, pair_codes, pair_cosines
from memguard.dedup.signals.views import SINGLE, ViewLayout, view, views_equal

QUERY_BLOCK = 65_536  # a multiple of faiss's own query block (4,096): results do not depend on it

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


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
    spec = SearchSpec(params, layout, floor, widen)
    found_by = tasks.found if tasks is not None and tasks.worth_it(plans, n) else _found_in_process
    codes, values = found_by(embeddings, plans, spec)
    found, first = np.unique(codes, return_index=True)
    pairs = code_pairs(found, n)
    if layout.single:  # the similarity the search found the pair with
        return pairs, values[first].astype(np.float32)
    sims = pair_cosines(embeddings, pairs[:, 0], pairs[:, 1], layout=layout)
    keep = _kept(widen, sims, rows=pairs[:, 0], cols=pairs[:, 1], min_sim=params.min_sim)  # a gated pair (grey) found may not count
    return pairs[keep], sims[keep]


@dataclass(frozen=True)
class SearchSpec:
    """What every planned search of one neighbour search shares: the index parameters, the view layout,
    the similarity a found pair must reach, and the rows kept down to a lower floor."""

    params: IndexParams
    layout: ViewLayout
    floor: float
    widen: Widen | None


class SearchTasks(Protocol):
    """How a search runs as tasks (``memguard/dedup/signals/neighbor_tasks.py``)."""

    def worth_it(self, plans: list[PlannedSearch], n: int) -> bool: ...

    def found(
        self, embeddings: np.ndarray, plans: list[PlannedSearch], spec: SearchSpec
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
    embeddings: np.ndarray, plans: list[PlannedSearch], spec: SearchSpec
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
            held = view(embeddings, spec.layout, b) if indexed is None else view(embeddings, spec.layout, b)[indexed]
            search, built = searcher(np.ascontiguousarray(held, np.float32), spec.params), (b, gate)
        total = n if queries is None else len(queries)
        k = min(spec.params.k + 1, n if indexed is None else len(indexed))  # a sample's own row comes back too
        blocks = QueryBlocks(a, queries, 0, total, k, spec.floor, spec.widen)
        found, vals = found_codes(embeddings, search, indexed, layout=spec.layout, blocks=blocks)
        codes.append(found)
        values.append(vals)
    return np.concatenate(codes), np.concatenate(values)
