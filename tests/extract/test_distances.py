"""Each distance against a hand-computed value; the clique test on a constructed graph; MIA AUC."""

from __future__ import annotations

import numpy as np

from memguard.extract.attacks import generate_and_filter, largest_clique
from memguard.extract.distances import l2, normalized_l2, pairwise_l2, tiled_l2
from memguard.extract.membership import loss_attack, roc_auc, tpr_at_fpr
from memguard.extract.stratify import bucket_of, extraction_by_bucket


def _img(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def test_l2_hand_computed() -> None:
    # Every pixel differs by 51/255 = 0.2 → ℓ2 = 0.2.
    assert abs(l2(_img(0), _img(51)) - 0.2) < 1e-9
    d = pairwise_l2(np.stack([_img(0), _img(51)]), np.stack([_img(51), _img(102)]))
    assert np.allclose(d, [[0.2, 0.4], [0.0, 0.2]], atol=1e-5)


def test_normalized_l2_hand_computed() -> None:
    training = np.stack([_img(0), _img(51), _img(102)])
    # Generation = image 0 + 0.02: ℓ2 to the 3 training images = 0.02, 0.18, 0.38 (n = 3, α = 0.5).
    generated = np.stack([_img(5)])  # 5/255 ≈ 0.0196
    score, nearest, dmin = normalized_l2(generated, training, alpha=0.5, n=3)
    expected = (5 / 255) / (0.5 * np.mean([5 / 255, 46 / 255, 97 / 255]))
    assert nearest[0] == 0 and abs(dmin[0] - 5 / 255) < 1e-5 and abs(score[0] - expected) < 1e-4


def test_grouped_normalized_l2_counts_each_image_once_at_its_closest_copy() -> None:
    # Image A has three copies (0, 4, 8), images B and C one each: groups [A, A, A, B, C].
    training = np.stack([_img(0), _img(4), _img(8), _img(51), _img(102)])
    groups = np.array([0, 0, 0, 1, 2])
    generated = np.stack([_img(5)])
    score, nearest, dmin = normalized_l2(generated, training, alpha=0.5, n=3, groups=groups)
    # Closest copy of A is 4 (ℓ2 1/255); the 3 nearest *images* are A, B, C at 1, 46, 97 (/255).
    expected = (1 / 255) / (0.5 * np.mean([1 / 255, 46 / 255, 97 / 255]))
    assert nearest[0] == 0 and abs(dmin[0] - 1 / 255) < 1e-5 and abs(score[0] - expected) < 1e-4
    # Ungrouped, the copies of A fill the neighbourhood and hide the memorization.
    ungrouped, _, _ = normalized_l2(generated, training, alpha=0.5, n=3)
    assert ungrouped[0] > 3 * score[0]


def test_tiled_l2_takes_the_worst_tile() -> None:
    a = _img(0, 8)
    b = a.copy()
    b[:2, :2] = 255  # one of the 16 tiles (2x2 px each) is completely different
    assert abs(tiled_l2(a[None], b[None])[0, 0] - 1.0) < 1e-6
    assert abs(l2(a, b) - np.sqrt(1 / 16)) < 1e-9  # the plain ℓ2 dilutes it


def test_largest_clique_on_a_constructed_graph() -> None:
    d = np.ones((7, 7))
    for i in range(5):  # generations 0..4 are pairwise close: a 5-clique
        for j in range(5):
            d[i, j] = 0.01
    d[5, 6] = d[6, 5] = 0.01  # a separate edge
    d[4, 5] = d[5, 4] = 0.01
    assert largest_clique(d, 0.1) == [0, 1, 2, 3, 4]
    assert largest_clique(np.ones((3, 3)), 0.1) in ([0], [1], [2])


def test_generate_and_filter_flags_and_verifies() -> None:
    train = _img(100, 8)
    copies = np.stack([np.clip(train.astype(int) + k, 0, 255).astype(np.uint8) for k in range(6)])
    noise = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    verdict = generate_and_filter(np.concatenate([copies, noise]), train[None], tau=0.1, min_clique=5)
    assert verdict.flagged and verdict.extracted and verdict.best_l2 < 0.02
    shifted = np.clip(train.astype(int) + 40, 0, 255).astype(np.uint8)  # a second, farther copy
    two = generate_and_filter(np.concatenate([copies, noise]), np.stack([shifted, train]), tau=0.1, min_clique=5)
    assert two.extracted and two.best_image == 1 and abs(two.best_l2 - verdict.best_l2) < 1e-6
    diverse = generate_and_filter(noise, train[None], tau=0.1, min_clique=3)
    assert not diverse.flagged and not diverse.extracted


def test_auc_and_tpr() -> None:
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    assert tpr_at_fpr(np.linspace(0, 1, 100) + 10, np.linspace(0, 1, 100), 0.01) == 1.0


def test_loss_attack_chooses_the_timestep_on_one_half_and_measures_on_the_other() -> None:
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1.0, 0.1, (40, 3)), rng.normal(1.0, 0.1, (40, 3))
    members[:, 1] -= 0.3  # only timestep 100 separates members
    result = loss_attack(members, nonmembers, [10, 100, 400], seed=3)
    assert result["best_timestep"] == 100 and str(result["timestep_chosen_on"]).startswith("a separate half")
    assert result["auc"] > 0.9 and result["per_timestep"]["10"]["auc"] < 0.8  # type: ignore[index]
    # Pure noise: a timestep chosen on the same images looks better than the honest, held-apart figure.
    noise_m, noise_n = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    honest = loss_attack(noise_m, noise_n, list(range(8)), seed=1)
    same_images = max(v["auc"] for v in honest["per_timestep"].values())  # type: ignore[attr-defined]
    assert float(honest["auc"]) < same_images  # type: ignore[arg-type]
    few = loss_attack(members[:3], nonmembers[:3], [10, 100, 400])
    assert "same images" in str(few["timestep_chosen_on"])


def test_buckets() -> None:
    counts = (1, 2, 3, 4, 8, 15, 16, 31, 32, 64, 127, 128, 1000)
    assert [bucket_of(c) for c in counts] == [
        "1",
        "2-3",
        "2-3",
        "4-7",
        "8-15",
        "8-15",
        "16-31",
        "16-31",
        "32-63",
        "64-127",
        "64-127",
        "128+",
        "128+",
    ]
    table = extraction_by_bucket(np.array([1, 1, 2, 32]), np.array([False, True, False, True]))
    assert table["1"] == {"images": 2, "extracted": 1, "rate": 0.5} and table["32-63"]["rate"] == 1.0
