"""Membership inference by the loss-threshold attack: lower denoising loss ⇒ "member".

Per timestep: AUC (probability a random member scores below a random non-member) and the true-positive
rate at 1% false positives, plus the best timestep.
"""

from __future__ import annotations

import numpy as np


def roc_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """AUC of "score is higher for members" (Mann–Whitney U with ties counted half)."""
    scores = np.concatenate([member_scores, nonmember_scores])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    m = len(member_scores)
    u = ranks[:m].sum() - m * (m + 1) / 2.0
    return float(u / (m * len(nonmember_scores)))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float = 0.01) -> float:
    """Share of members above the threshold that only ``fpr`` of non-members exceed."""
    threshold = np.quantile(nonmember_scores, 1.0 - fpr, method="higher")
    return float((member_scores > threshold).mean())


def loss_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray, timesteps: list[int]) -> dict[str, object]:
    """Inputs (N, T) per-sample losses; the attack score is the negative loss."""
    per_t = {}
    for j, t in enumerate(timesteps):
        per_t[str(t)] = {
            "auc": round(roc_auc(-member_losses[:, j], -nonmember_losses[:, j]), 4),
            "tpr_at_1pct_fpr": round(tpr_at_fpr(-member_losses[:, j], -nonmember_losses[:, j]), 4),
        }
    best = max(per_t, key=lambda t: per_t[t]["auc"])
    return {
        "per_timestep": per_t,
        "best_timestep": int(best),
        "auc": per_t[best]["auc"],
        "tpr_at_1pct_fpr": per_t[best]["tpr_at_1pct_fpr"],
        "members": len(member_losses),
        "nonmembers": len(nonmember_losses),
    }
