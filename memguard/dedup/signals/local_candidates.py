"""Candidate pairs from local features: images that share keypoint descriptors.

The global descriptor's neighbours miss a copy whose original fills only part of it (a picture pasted
into a screenshot or a collage, a caption band, a wide border): the whole copy does not resemble the
whole original, so the original is not among the copy's nearest neighbours however many are kept. Its
keypoints still are the original's. So every image's descriptors (the first ``vote_descriptors`` of its
packed row, and as queries also their mirrored versions) go into one binary index (faiss
``IndexBinaryFlat``, or ``IndexBinaryIVF`` above ``exact_below`` descriptors), each descriptor's
``vote_neighbours`` nearest within ``max_hamming`` bits vote for the pair of images they belong to, and
pairs with at least ``min_votes`` votes become candidates for verification — the inverted-file voting of
classic copy detection, with faiss's binary search instead of a visual vocabulary.
"""

from __future__ import annotations

import faiss
import numpy as np

from memguard.common.mapped import release
from memguard.dedup.signals.local_features import keypoint_counts
from memguard.dedup.signals.local_params import BITS, DESCRIPTOR, HEADER, FeatureParams, LocalParams, VoteParams
from memguard.dedup.signals.pairs import code_pairs, pair_codes


def _descriptors(features: np.ndarray, params: FeatureParams, votes: VoteParams) -> tuple[np.ndarray, ...]:
    """The first descriptors of every packed row, their mirrored versions and the row each came from."""
    k, width = params.keypoints, DESCRIPTOR * (2 if params.mirror else 1)
    take = min(votes.vote_descriptors, k)
    counts = np.minimum(keypoint_counts(features, params), take)
    direct, mirrored, owner = [], [], []
    for start in range(0, len(features), 8192):
        block = np.asarray(features[start : start + 8192, HEADER + 4 * k : HEADER + 4 * k + take * width])
        per_keypoint = block.reshape(len(block), take, width)
        keep = np.arange(take)[None, :] < counts[start : start + len(block), None]
        direct.append(per_keypoint[:, :, :DESCRIPTOR][keep])
        mirrored.append(per_keypoint[:, :, DESCRIPTOR:][keep] if params.mirror else np.zeros((0, DESCRIPTOR), np.uint8))
        owner.append(np.nonzero(keep)[0] + start)
        release(features)
    if not direct:  # no image with keypoints
        empty = np.zeros((0, DESCRIPTOR), np.uint8)
        return empty, empty, np.zeros(0, np.int64)
    return (np.ascontiguousarray(np.concatenate(direct)), np.ascontiguousarray(np.concatenate(mirrored)),
            np.concatenate(owner))  # fmt: skip


def _index(database: np.ndarray, votes: VoteParams) -> faiss.IndexBinary:
    if len(database) < votes.exact_below:
        flat = faiss.IndexBinaryFlat(BITS)
        flat.add(database)
        return flat
    nlist = max(1, int(np.sqrt(len(database))), len(database) // 256)
    ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(BITS), BITS, nlist)
    sample = np.random.default_rng(0).choice(len(database), min(len(database), nlist * 39), replace=False)
    ivf.train(database[np.sort(sample)])
    ivf.nprobe = votes.nprobe
    ivf.add(database)
    return ivf


def vote_pairs(features: np.ndarray, rows: np.ndarray, params: LocalParams) -> np.ndarray:
    """(m, 2) int64 sample pairs, i < j, whose descriptors agree ``min_votes`` times or more."""
    n, votes = len(rows), params.votes
    direct, mirrored, owner_row = _descriptors(features, params.features, votes)
    if not len(direct):
        return np.zeros((0, 2), np.int64)
    sample_of_row = np.full(len(features), -1, np.int64)
    sample_of_row[rows[rows >= 0]] = np.flatnonzero(rows >= 0)
    owner = sample_of_row[owner_row]
    index = _index(direct, votes)
    codes = []
    for queries in (direct, mirrored):
        for start in range(0, len(queries), 65_536):
            distances, found = index.search(queries[start : start + 65_536], votes.vote_neighbours + 1)
            mine = owner[start : start + len(distances), None]
            theirs = np.where(found >= 0, owner[np.maximum(found, 0)], -1)
            hit = (found >= 0) & (distances <= votes.max_hamming) & (theirs != mine) & (theirs >= 0)
            a, b = np.broadcast_to(mine, hit.shape)[hit], theirs[hit]
            codes.append(pair_codes(a, b, n))
    if not codes:
        return np.zeros((0, 2), np.int64)
    unique, count = np.unique(np.concatenate(codes), return_counts=True)
    return code_pairs(unique[count >= votes.min_votes], n)
