"""Multi-view embeddings: a row holds several views of one image side by side, each of unit norm, and two
images are as similar as their best-matching allowed pair of views (the ``robust`` embedder's crop,
rotation, flip and greyscale views against the other image's base view). Single-view embedders (every
other kind) have one view and one pair: the similarity is the plain cosine.

A layout may also *refine* a pair: where the best view pair reaches ``refine_floor`` (and is not
already within 1e-4 of 1), the similarity is the larger of that and ``refine`` of the two images'
``refine_view`` (the robust embedder aligns its base views over small crops and shifts:
memguard/dedup/signals/robust_align.py). Refinement only ever raises a similarity, and only of pairs already
that close, so a search that finds pairs at or above the floor finds every pair refinement could lift.

Written by hand: faiss indexes single vectors; the max over view pairs is what copy detection's
multi-view queries compute (search each query view, rescore the pair by its best view pair).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Refine = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (m, d) view rows, (m, d) view rows → (m,) similarities
REFINE_BLOCK = 65_536  # pairs refined at a time (two gathered view rows each)
# Pairs this close to 1 are not refined: a cosine cannot rise by more than the gap, and they are the
# bulk of the work otherwise (a sample with itself, identical and re-encoded copies).
REFINE_CEILING = 1.0 - 1e-4


@dataclass(frozen=True)
class ViewPair:
    """View ``a`` of one sample against view ``b`` of the other (both ways round). With ``gate`` (x, y),
    the pair counts only where the ``b`` side's views x and y are equal (the robust embedder's greyscale
    view counts only against an image that has no colour: its base and grey views coincide).

    With ``search_unless_equal`` v, the neighbour search queries view ``a`` only from rows where it
    differs from their view v: where they are equal, what the query would find is found through view v's
    own queries — given that (v, v) is a pair and either ``b`` is v (then the other sample's view ``b``
    *is* the one v's query meets) or, for a pair of ``a`` with itself, the other sample's view ``a``
    equals its view v too (else its own query of view ``a`` finds this row). The robust embedder's trim
    view equals its base view for every image with nothing to trim, and its grey view equals its base
    view for every image without colour: most rows of most corpora search neither."""

    a: int
    b: int
    gate: tuple[int, int] | None = None
    search_unless_equal: int | None = None


@dataclass(frozen=True)
class ViewLayout:
    count: int = 1
    pairs: tuple[ViewPair, ...] = (ViewPair(0, 0),)
    refine: Refine | None = None
    refine_view: int = 0
    refine_floor: float = 1.0

    @property
    def single(self) -> bool:
        return self.count == 1

    @property
    def indexed(self) -> tuple[int, ...]:
        """Views the neighbour index holds (every pair's ``b``); queries are every pair's ``a``."""
        return tuple(sorted({p.b for p in self.pairs}))


SINGLE = ViewLayout()
GATE_TOLERANCE = 1e-6


def view(rows: np.ndarray, layout: ViewLayout, v: int) -> np.ndarray:
    """View ``v`` of each row (a strided slice, no copy)."""
    width = rows.shape[-1] // layout.count
    return rows[..., v * width : (v + 1) * width]


def views_equal(rows: np.ndarray, layout: ViewLayout, views: tuple[int, int]) -> np.ndarray:
    """Whether the two ``views`` (x, y) of each row coincide (within float rounding): (len(rows),) bool."""
    x, y = views
    return np.abs(view(rows, layout, x) - view(rows, layout, y)).max(axis=-1) <= GATE_TOLERANCE


def gate_open(rows: np.ndarray, layout: ViewLayout, gate: tuple[int, int]) -> np.ndarray:
    return views_equal(rows, layout, gate)


def symmetric_pair(pair: ViewPair) -> bool:
    """A view against the same view, ungated: both ways round give the same dot products."""
    return pair.a == pair.b and pair.gate is None


def pair_similarity(x: np.ndarray, y: np.ndarray, layout: ViewLayout) -> np.ndarray:
    """Similarity of aligned rows ``x[i]`` and ``y[i]``: (m,) float32."""
    if layout.single:
        return np.einsum("ij,ij->i", x, y).astype(np.float32)
    best = np.full(len(x), -np.inf, np.float32)
    for pair in layout.pairs:
        for one, other in ((x, y), (y, x))[: 1 if symmetric_pair(pair) else 2]:
            dots = np.einsum("ij,ij->i", view(one, layout, pair.a), view(other, layout, pair.b))
            if pair.gate is not None:
                dots = np.where(gate_open(other, layout, pair.gate), dots, -np.inf)
            np.maximum(best, dots, out=best)
    return _refined(best, x, y, rows=np.arange(len(x)), cols=np.arange(len(y)), layout=layout) if layout.refine else best


def _refined(
    best: np.ndarray, x: np.ndarray, y: np.ndarray, *, rows: np.ndarray, cols: np.ndarray, layout: ViewLayout
) -> np.ndarray:
    """``best`` (aligned with ``rows``/``cols`` of ``x``/``y``) raised by the layout's refinement where it
    reaches the floor; refined in place and returned. Only the refined view's columns are gathered."""
    refine = layout.refine
    if refine is None:
        return best
    todo = np.flatnonzero((best >= layout.refine_floor) & (best < REFINE_CEILING))
    x_view, y_view = view(x, layout, layout.refine_view), view(y, layout, layout.refine_view)
    for start in range(0, len(todo), REFINE_BLOCK):
        part = todo[start : start + REFINE_BLOCK]
        best[part] = np.maximum(best[part], refine(x_view[rows[part]], y_view[cols[part]]))
    return best


def similarity_matrix(x: np.ndarray, y: np.ndarray, layout: ViewLayout) -> np.ndarray:
    """Similarity of every row of ``x`` with every row of ``y``: (len(x), len(y)) float32."""
    if layout.single:
        return (x @ y.T).astype(np.float32)
    best = np.full((len(x), len(y)), -np.inf, np.float32)
    for pair in layout.pairs:
        forward = view(x, layout, pair.a) @ view(y, layout, pair.b).T
        if pair.gate is not None:
            forward = np.where(gate_open(y, layout, pair.gate)[None, :], forward, -np.inf)
        np.maximum(best, forward, out=best)
        if symmetric_pair(pair):
            continue
        backward = view(x, layout, pair.b) @ view(y, layout, pair.a).T
        if pair.gate is not None:
            backward = np.where(gate_open(x, layout, pair.gate)[:, None], backward, -np.inf)
        np.maximum(best, backward, out=best)
    if layout.refine is not None:
        i, j = np.nonzero((best >= layout.refine_floor) & (best < REFINE_CEILING))
        best[i, j] = _refined(best[i, j], x, y, rows=i, cols=j, layout=layout)
    return best


def best_match(
    queries: np.ndarray, rows: np.ndarray, layout: ViewLayout, *, block: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the most similar of ``rows`` and its similarity: (similarities, indices),
    exhaustive (every pair scored), a block of ``rows`` at a time."""
    best = np.full(len(queries), -np.inf, np.float32)
    where = np.zeros(len(queries), np.int64)
    for start in range(0, len(rows), block):
        sims = similarity_matrix(queries, rows[start : start + block], layout)
        if not sims.size:
            continue
        top = sims.argmax(axis=1)
        value = sims[np.arange(len(queries)), top]
        better = value > best
        best[better], where[better] = value[better], start + top[better]
    return best, where
