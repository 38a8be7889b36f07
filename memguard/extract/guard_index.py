"""The guard's search over many training vectors: faiss indices over the views dedup compares (IVF in a
PCA projection above ``exact_below``, as dedup's neighbour search), their top candidates rescored with
dedup's exact similarity (``pair_similarity``: the best allowed view pair, alignment included).

For a multi-view layout each allowed view pair (a, b) is searched both ways it is scored: the query's view a
against an index of the training rows' view b (only the rows whose gate is open, for a gated pair), and for
a pair that is not symmetric the query's view b against the training rows' view a (only from the queries
whose gate is open). Below ``exact_below`` training vectors the exhaustive ``best_match`` answers instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from memguard.common.config import in_range
from memguard.dedup.signals.neighbors import IndexParams, Search, searcher
from memguard.dedup.signals.views import (
    ViewLayout,
    best_match,
    gate_open,
    pair_similarity,
    similarity_matrix,
    symmetric_pair,
    view,
)


@dataclass(frozen=True)
class GuardIndexParams:
    """k: candidates per query and search, rescored exactly; exact_below: an exhaustive search below this
    many training vectors; index: dedup's index parameters (kind, PCA dimension, nlist, nprobe)."""

    k: int = 32
    exact_below: int = 50_000
    index: IndexParams = field(default_factory=IndexParams)

    def __post_init__(self) -> None:
        in_range("guard k", self.k, lo=1)
        in_range("guard exact_below", self.exact_below, lo=0)


@dataclass(frozen=True)
class _Search:
    query_view: int
    search: Search
    rows: np.ndarray | None  # the training rows the index holds (None: all)
    query_gate: tuple[int, int] | None  # searched only from queries whose gate is open


class TrainingIndex:
    """``best(queries)`` → (similarity, training row) of each query's best match, as ``best_match`` would
    give over every training vector, from the candidates the indices find."""

    def __init__(self, vectors: np.ndarray, layout: ViewLayout, params: GuardIndexParams | None = None) -> None:
        self.vectors, self.layout = vectors, layout
        self.params = params or GuardIndexParams()
        self.exhaustive = len(vectors) < self.params.exact_below
        self.searches = [] if self.exhaustive else self._build()

    def _build(self) -> list[_Search]:
        built: dict[tuple[int, tuple[int, int] | None], tuple[Search, np.ndarray | None]] = {}

        def index_of(indexed_view: int, gate: tuple[int, int] | None) -> tuple[Search, np.ndarray | None]:
            if (indexed_view, gate) not in built:
                rows = None if gate is None else np.flatnonzero(gate_open(self.vectors, self.layout, gate))
                # A column slice of the (memory-mapped) vectors: the PCA projection and the exact rescoring read
                # it a block at a time, so no full copy of a view is made (a gated subset is copied: few rows).
                held = view(self.vectors, self.layout, indexed_view)
                built[indexed_view, gate] = (searcher(held if rows is None else held[rows], self.params.index), rows)
            return built[indexed_view, gate]

        searches = []
        for pair in self.layout.pairs:
            search, rows = index_of(pair.b, pair.gate)  # the query's view a, the training row's view b
            if rows is None or len(rows):
                searches.append(_Search(pair.a, search, rows, None))
            if not symmetric_pair(pair):  # the training row's view a, the query's view b (its gate: the query's)
                search, rows = index_of(pair.a, None)
                searches.append(_Search(pair.b, search, rows, pair.gate))
        return searches

    def best(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, np.float32)
        if self.exhaustive or not len(queries):
            return best_match(queries, self.vectors, self.layout)
        candidates = self._candidates(queries)
        q_rows = np.repeat(np.arange(len(queries)), candidates.shape[1])
        cols = candidates.ravel()
        found = cols >= 0
        q_rows, cols = q_rows[found], cols[found]
        sims = pair_similarity(queries[q_rows], self.vectors[cols], self.layout)
        order = np.lexsort((-sims, q_rows))  # by query, the most similar candidate first
        first = order[np.unique(q_rows[order], return_index=True)[1]]
        best = np.full(len(queries), -np.inf, np.float32)
        where = np.zeros(len(queries), np.int64)
        best[q_rows[first]], where[q_rows[first]] = sims[first], cols[first]
        return best, where

    def scored_candidates(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, training row, similarity) of each query's top ``k`` candidates of every search,
        or of its ``k`` most similar training rows when exhaustive: what a second stage re-scores."""
        queries = np.ascontiguousarray(queries, np.float32)
        if self.exhaustive:
            sims = similarity_matrix(queries, self.vectors, self.layout)
            k = min(self.params.k, sims.shape[1])
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            q_rows = np.repeat(np.arange(len(queries)), k)
            return q_rows, top.ravel(), np.take_along_axis(sims, top, axis=1).ravel()
        candidates = self._candidates(queries)
        q_rows = np.repeat(np.arange(len(queries)), candidates.shape[1])
        cols = candidates.ravel()
        found = cols >= 0
        q_rows, cols = q_rows[found], cols[found]
        return q_rows, cols, pair_similarity(queries[q_rows], self.vectors[cols], self.layout)

    def _candidates(self, queries: np.ndarray) -> np.ndarray:
        """(len(queries), m) training rows, -1 padded: every search's top k, each row once per query."""
        k = min(self.params.k, len(self.vectors))
        found = [np.full((len(queries), 0), -1, np.int64)]
        for s in self.searches:
            asking = np.ones(len(queries), bool) if s.query_gate is None else gate_open(queries, self.layout, s.query_gate)
            idx = np.full((len(queries), k), -1, np.int64)
            if asking.any():
                _, hits = s.search(np.ascontiguousarray(view(queries[asking], self.layout, s.query_view)), k)
                idx[asking] = hits if s.rows is None else np.where(hits >= 0, s.rows[np.maximum(hits, 0)], -1)
            found.append(idx)
        both = np.concatenate(found, axis=1)
        both.sort(axis=1)
        repeated = np.zeros_like(both, bool)
        repeated[:, 1:] = both[:, 1:] == both[:, :-1]
        return np.where(repeated, -1, both)
