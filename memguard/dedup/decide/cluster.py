"""Step 6, ``cluster``: a pair rule over the signals, connected components, a deterministic keeper.

Thresholds live here only, so a sweep over them reuses the cached signatures, embeddings and pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from memguard.common.config import in_range
from memguard.common.mapped import rows_of
from memguard.dedup.decide.decision import Decision
from memguard.dedup.decide.edges import Edges
from memguard.dedup.signals.local import Verifier, scored_as_candidates
from memguard.dedup.signals.pairs import PairTable, pair_cosines
from memguard.dedup.signals.views import SINGLE, ViewLayout, similarity_matrix

SIGNALS = ("exact_pixels", "image", "caption+image", "caption_semantic+image")  # in order of strength


@dataclass(frozen=True)
class ClusterRule:
    """An edge joins two samples when any clause holds:

    exact pixels equal (if ``use_exact``); or image cosine ≥ ``image_threshold``; or caption Jaccard
    ≥ ``caption_threshold`` and image cosine ≥ ``loose_image_threshold`` (same caption, looser image
    match); or, when ``caption_semantic_threshold`` is set, caption-embedding cosine ≥ it and the same
    loose image match. A caption match alone never joins two samples: LAION has many different images
    captioned "image" or "photo".
    """

    image_threshold: float = 0.975  # chosen for the default ``robust`` embedder (bench/dedup_quality.py)
    caption_threshold: float = 0.7
    loose_image_threshold: float = 0.8
    use_exact: bool = True
    caption_semantic_threshold: float | None = None
    # A removed sample joins, of the kept samples it matches within this much image similarity of its
    # best, the first in keeper priority: closer than this is the noise of an edit (chosen on the choosing
    # half of bench/dedup_transforms.py).
    assign_margin: float = 0.01

    def __post_init__(self) -> None:
        in_range("image threshold (dedup.image.threshold)", self.image_threshold, lo=-1.0, hi=1.0)
        in_range("loose image threshold (dedup.image.loose_threshold)", self.loose_image_threshold, lo=-1.0, hi=1.0)
        in_range("caption threshold (dedup.caption.threshold)", self.caption_threshold, lo=0.0, hi=1.0)
        if self.caption_semantic_threshold is not None:
            in_range("dedup.caption.semantic.threshold", self.caption_semantic_threshold, lo=-1.0, hi=1.0)
        in_range("dedup.image.assign_margin", self.assign_margin, lo=0.0, hi=2.0)


def _pair_cosines(vectors: np.ndarray | None, pairs: np.ndarray, layout: ViewLayout = SINGLE) -> np.ndarray:
    if vectors is None:
        return np.full(len(pairs), np.nan, np.float32)
    return pair_cosines(vectors, pairs[:, 0], pairs[:, 1], layout=layout)


def merge_candidates(
    n: int,
    *,
    embeddings: np.ndarray,
    image_pairs: np.ndarray,
    image_sims: np.ndarray,
    caption_pairs: np.ndarray,
    caption_jaccard: np.ndarray,
    exact_groups: np.ndarray,
    caption_embeddings: np.ndarray | None = None,
    semantic_pairs: np.ndarray | None = None,
    views: ViewLayout = SINGLE,
) -> Edges:
    """Union of image, caption (MinHash and, optionally, semantic) and exact-hash candidates, each with
    every score filled in. ``caption_embeddings`` rows of unusable captions are NaN (scores stay NaN)."""
    exact_pairs = []
    order = np.argsort(exact_groups, kind="stable")
    same = np.flatnonzero(exact_groups[order][1:] == exact_groups[order][:-1])
    if len(same):
        exact_pairs.append(np.sort(np.stack([order[same], order[same + 1]], axis=1), axis=1))
    extra = [semantic_pairs.reshape(-1, 2)] if semantic_pairs is not None else []
    all_pairs = np.concatenate([image_pairs.reshape(-1, 2), caption_pairs.reshape(-1, 2), *extra, *exact_pairs]).astype(
        np.int64
    )
    if not len(all_pairs):
        empty = np.zeros(0, np.float32)
        return Edges(np.zeros((0, 2), np.int64), empty, empty, np.zeros(0, bool), empty)
    pairs = np.unique(all_pairs, axis=0)
    code = pairs[:, 0] * n + pairs[:, 1]
    # The image pairs come scored (the search rescored them with the same layout): only the others are.
    sims = np.full(len(pairs), np.nan, np.float32)
    if len(image_pairs):
        ordered = np.sort(image_pairs.reshape(-1, 2), axis=1)
        sims[np.searchsorted(code, ordered[:, 0] * n + ordered[:, 1])] = image_sims
    unscored = np.flatnonzero(np.isnan(sims))
    sims[unscored] = _pair_cosines(embeddings, pairs[unscored], views)
    jac = np.full(len(pairs), np.nan, np.float32)
    if len(caption_pairs):
        cap_code = caption_pairs[:, 0] * n + caption_pairs[:, 1]
        pos = np.searchsorted(code, cap_code)
        jac[pos] = caption_jaccard
    exact = exact_groups[pairs[:, 0]] == exact_groups[pairs[:, 1]]
    return Edges(pairs, sims, jac, exact, _pair_cosines(caption_embeddings, pairs))


# Per pair: exact pixels (bool), image cosine, caption Jaccard, caption-embedding cosine (NaN where absent).
PairSignals = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _accept(signals: PairSignals, rule: ClusterRule) -> np.ndarray:
    """Signal index per pair under the rule: 0 exact, 1 image, 2 caption+image, 3 caption_semantic+image,
    -1 rejected."""
    exact, image_sim, jaccard, caption_sim = signals
    loose = image_sim >= rule.loose_image_threshold
    with np.errstate(invalid="ignore"):
        caption = (jaccard >= rule.caption_threshold) & loose
        semantic = (
            (caption_sim >= rule.caption_semantic_threshold) & loose
            if rule.caption_semantic_threshold is not None
            else np.zeros_like(caption)
        )
    image = image_sim >= rule.image_threshold
    exact = exact & rule.use_exact
    return np.where(exact, 0, np.where(image, 1, np.where(caption, 2, np.where(semantic, 3, -1))))


@dataclass(frozen=True)
class PairScorer:
    """Scores samples against each other directly, with the same signals the candidates carry: candidate
    search (kNN with a fixed k, LSH) can miss pairs inside a large group of copies; this cannot."""

    embeddings: np.ndarray
    signatures: np.ndarray
    usable: np.ndarray
    exact_groups: np.ndarray
    caption_embeddings: np.ndarray | None = None
    views: ViewLayout = SINGLE
    # The image pairs' similarities as the candidate stage scored them (with local verification, they
    # differ from the global descriptor's): a pair the candidates hold is scored as they do.
    known: PairTable | None = None
    verifier: Verifier | None = None  # local features: pairs the candidates do not hold, verified here
    rows_held: np.ndarray | None = None  # the samples whose rows embeddings/signatures hold (None: all)

    def gathered(self, members: np.ndarray) -> PairScorer:
        """This scorer for ``members`` (ascending) only, their rows read into memory once: a component's
        samples lie all over the mapped arrays, and the keeper pass scores each of them several times."""
        return replace(self, embeddings=rows_of(self.embeddings, members), signatures=rows_of(self.signatures, members),
                       rows_held=members)  # fmt: skip

    def _rows(self, array: np.ndarray, samples: np.ndarray) -> np.ndarray:
        if self.rows_held is None:
            return rows_of(array, samples)  # read from a mapped array's file, not through its mapping
        return array[np.searchsorted(self.rows_held, samples)]

    def __call__(self, i: int, others: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every signal of sample ``i`` against each of ``others``: one row of ``block``."""
        exact, sims, jac, cap_sims = self.block(np.array([i]), others)
        return exact[0], sims[0], jac[0], cap_sims[0]

    def block(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every signal of every (row, col) pair: exact, image, caption Jaccard, caption cosine, (r, c)."""
        sims = similarity_matrix(self._rows(self.embeddings, rows), self._rows(self.embeddings, cols), self.views)
        if self.known is not None or self.verifier is not None:
            left, right = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
            flat = scored_as_candidates(sims.reshape(-1), left, right, known=self.known, verifier=self.verifier)
            sims = flat.reshape(sims.shape)
        jac = (self._rows(self.signatures, rows)[:, None, :] == self._rows(self.signatures, cols)[None, :, :]).mean(axis=2)
        jac = np.where(self.usable[rows][:, None] & self.usable[cols][None, :], jac, np.nan)
        exact = self.exact_groups[rows][:, None] == self.exact_groups[cols][None, :]
        cap = self.caption_embeddings
        cap_sims = cap[rows] @ cap[cols].T if cap is not None else np.full_like(sims, np.nan)
        return exact, sims, jac, cap_sims

    def degrees(self, members: np.ndarray, rule: ClusterRule) -> tuple[np.ndarray, np.ndarray]:
        """How many other members each member meets the rule with, and the sum of its image similarities
        to them (all pairs: O(m²))."""
        exact, sims, jac, cap_sims = self.block(members, members)
        match = _accept((exact, sims, jac, cap_sims), rule) >= 0
        np.fill_diagonal(match, False)
        return match.sum(axis=1), np.where(match, _milli(sims), 0).sum(axis=1)


BLOCK_CELLS = 1 << 22  # (removed × kept × signature width) compared at once when assigning


def _assign(
    removed: np.ndarray, kept: np.ndarray, scorer: PairScorer, *, rule: ClusterRule
) -> tuple[np.ndarray, np.ndarray]:
    """For each removed sample, the kept sample it joins and the signal joining them (an index into
    SIGNALS): a kept sample with identical pixels if any; else, of the kept samples it matches with an
    image similarity within ``rule.assign_margin`` of its best, the first in keeper priority (``kept`` is
    in that order). Each removed sample matches at least one kept sample."""
    keepers, signals = np.empty(len(removed), np.int64), np.empty(len(removed), np.int64)
    step = max(1, BLOCK_CELLS // max(1, len(kept) * scorer.signatures.shape[1]))
    for lo in range(0, len(removed), step):
        codes_and_sims = scorer.block(removed[lo : lo + step], kept)
        codes, sims = _accept(codes_and_sims, rule), codes_and_sims[1]
        score = np.where(codes < 0, -np.inf, np.where(codes == 0, np.inf, np.nan_to_num(sims, nan=-1.0)))
        near = score >= score.max(axis=1, keepdims=True) - rule.assign_margin
        first = np.argmax(near, axis=1)
        keepers[lo : lo + step] = kept[first]
        signals[lo : lo + step] = np.take_along_axis(codes, first[:, None], axis=1)[:, 0]
    return keepers, signals


def _milli(sims: np.ndarray) -> np.ndarray:
    """Similarities in integer thousandths (NaN as 0): their sums are exact whatever the order, so a tie
    between identical copies falls to ``rank``, never to rounding noise."""
    return np.rint(np.nan_to_num(sims) * 1000).astype(np.int64)


FULL_DEGREE_LIMIT = 512  # larger components order by candidate-edge degree, not an O(m²) count
GATHER_BYTES = 256 << 20  # a component's rows read into memory up to this size (larger: read per score)


def cluster(n: int, edges: Edges, *, rule: ClusterRule, rank: np.ndarray, scorer: PairScorer) -> Decision:
    """Keepers chosen so that the kept set is clean by construction (the approach of SemDeDup/NeMo Curator):

    - no two kept samples of one candidate component meet the rule — checked directly, so also where the
      candidate search missed the pair — and so no two kept samples have identical decoded pixels (exact
      twins are always candidates, hence in one component);
    - every removed sample meets the rule *directly* with the kept sample it is assigned to — never only
      through a chain of look-alikes (A~B~C with A and C different never merges A with C).

    Inside each component of accepted candidate edges, one pass in keeper-priority order: most matches
    first (an original sits at the centre of its scraped variants, so keeping it removes them all), then
    the highest sum of image similarities to them (the original is closer to each edit than the edits are
    to each other: a letterboxed copy, larger by its padding, must not win on size), then
    ``rank`` (callers rank by largest resolution, then smallest key). A sample is kept if it matches no kept
    sample. Once the component's kept set is final, each removed sample joins a kept sample it matches:
    one with identical pixels if any, else the first in priority of those it matches nearly as well as its
    best (``rule.assign_margin``) — a copy of one of several look-alike originals (keycaps, flags) joins
    its own original, not whichever look-alike was kept first, while near-ties go to the central keeper.
    Written by hand: no library computes a priority-ordered maximal independent set with assignments.
    """
    kept_edges = edges.subset(
        _accept((edges.exact, edges.image_sim, edges.caption_jaccard, edges.caption_sim), rule) >= 0
    )
    graph = coo_matrix((np.ones(len(kept_edges.pairs)), (kept_edges.pairs[:, 0], kept_edges.pairs[:, 1])), shape=(n, n))
    _, components = connected_components(graph, directed=False)
    ends = kept_edges.pairs.reshape(-1)
    edge_degree = np.bincount(ends, minlength=n)
    edge_strength = np.zeros(n, np.int64)
    np.add.at(edge_strength, ends, np.repeat(_milli(kept_edges.image_sim), 2))
    keeper = np.arange(n)
    signal = np.array([""] * n, dtype=object)
    sizes = np.bincount(components) if n else np.zeros(0, np.int64)
    in_groups = np.flatnonzero(sizes[components] > 1) if n else np.zeros(0, np.int64)
    order = in_groups[np.lexsort((in_groups, components[in_groups]))]
    row_bytes = scorer.embeddings[:1].nbytes + scorer.signatures[:1].nbytes
    for members in np.split(order, np.flatnonzero(np.diff(components[order])) + 1) if len(order) else []:
        component = scorer.gathered(members) if len(members) * row_bytes <= GATHER_BYTES else scorer
        if len(members) <= FULL_DEGREE_LIMIT:
            degree, strength = component.degrees(members, rule)
        else:
            degree, strength = edge_degree[members], edge_strength[members]
        kept: list[int] = []
        removed: list[int] = []
        for i in members[np.lexsort((members, rank[members], -strength, -degree))]:
            if kept and (_accept(component(int(i), np.asarray(kept)), rule) >= 0).any():
                removed.append(int(i))
            else:
                kept.append(int(i))
        if removed:
            keepers, codes = _assign(np.asarray(removed), np.asarray(kept), component, rule=rule)
            keeper[removed] = keepers
            signal[removed] = np.asarray(SIGNALS, dtype=object)[codes]
    _, labels = np.unique(keeper, return_inverse=True)
    size = np.bincount(labels)[labels] if n else np.zeros(0, np.int64)
    signal[np.flatnonzero((keeper == np.arange(n)) & (size > 1))] = "keeper"
    # Every row here is clusterable; the decide stage marks the rows it never offered (non-finite).
    return Decision(labels=labels, keeper=keeper, size=size, signal=signal, finite=np.ones(n, bool), edges=kept_edges)
