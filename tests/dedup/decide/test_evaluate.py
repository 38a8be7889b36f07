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
