"""evaluate(): pair arithmetic checked against counts made by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memguard.dedup.decide.evaluate import evaluate


def test_pair_counts_by_hand(tmp_path: Path) -> None:
    # Origins A (3 copies) and B share natural group G1 (skin-tone variants); C (2 copies) is G2; D is G3.
    truth = {
        "key": ["a1", "a2", "a3", "b1", "c1", "c2", "d1"],
        "origin": ["A", "A", "A", "B", "C", "C", "D"],
        "natural_group": ["G1", "G1", "G1", "G1", "G2", "G2", "G3"],
    }
    path = tmp_path / "truth.parquet"
    pq.write_table(pa.table(truth), path)
    # Predicted: {a1, a2, b1}, {a3}, {c1, c2, d1}; "x" has no ground truth and is ignored.
    keys = ["a1", "a2", "b1", "a3", "c1", "c2", "d1", "x"]
    clusters = np.array([0, 0, 0, 1, 2, 2, 2, 2])
    result = evaluate(keys, clusters, path)
    injected = result["injected"]
    # True pairs: A 3 + C 1 = 4. Predicted pairs: 3 + 3 = 6. Hits: a1-a2, c1-c2 = 2.
    # Neutral (same natural group, different origin): a1-b1, a2-b1 = 2. False: c1-d1, c2-d1 = 2.
    assert injected == {
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "true_pairs": 4,
        "found_pairs": 2,
        "false_pairs": 2,
    }
    # Natural pairs: G1 has 6 pairs, 3 of them same-origin → 3 (a1-b1, a2-b1, a3-b1); 2 found.
    assert result["natural_groups"] == {"pairs": 3, "found_pairs": 2, "recall": 0.6667}
    # Purity: (2 of [A, A, B]) + (2 of [C, C, D]) over 6 clustered samples.
    assert result["cluster_purity"] == 0.6667
    assert result["samples_evaluated"] == 7


def test_perfect_clustering_scores_one(tmp_path: Path) -> None:
    path = tmp_path / "truth.parquet"
    pq.write_table(
        pa.table({"key": ["a", "b", "c"], "origin": ["A", "A", "C"], "natural_group": ["A", "A", "C"]}), path
    )
    result = evaluate(["a", "b", "c"], np.array([0, 0, 1]), path)
    assert result["injected"]["precision"] == 1.0 and result["injected"]["recall"] == 1.0


def test_counts_equal_a_pair_by_pair_count(tmp_path: Path) -> None:
    """Random clusterings of 60 samples (some without ground truth): every figure as a loop over all
    pairs counts it."""
    rng = np.random.default_rng(3)
    n = 60
    origin = [f"o{v}" for v in rng.integers(0, 15, n)]
    group = [f"g{int(o[1:]) // 3}" for o in origin]
    path = tmp_path / "truth.parquet"
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(n)], "origin": origin, "natural_group": group}), path)
    for trial in range(5):
        clusters = rng.integers(0, 12 + trial, n + 3)
        keys = [f"k{i}" for i in range(n)] + ["x", "y", "z"]
        result = evaluate(keys, clusters, path)
        same = [(i, j) for i in range(n) for j in range(i + 1, n) if clusters[i] == clusters[j]]
        tp = sum(origin[i] == origin[j] for i, j in same)
        neutral = sum(origin[i] != origin[j] and group[i] == group[j] for i, j in same)
        true_pairs = sum(origin[i] == origin[j] for i in range(n) for j in range(i + 1, n))
        assert result["injected"]["found_pairs"] == tp and result["injected"]["true_pairs"] == true_pairs
        assert result["injected"]["false_pairs"] == len(same) - tp - neutral
        assert result["natural_groups"]["found_pairs"] == neutral
        members: dict[int, list[str]] = {}
        for i in range(n):
            members.setdefault(int(clusters[i]), []).append(origin[i])
        big = [m for m in members.values() if len(m) >= 2]
        purity = sum(max(m.count(o) for o in m) for m in big) / sum(len(m) for m in big)
        assert result["cluster_purity"] == round(purity, 4) and result["samples_evaluated"] == n
