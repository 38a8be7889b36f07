"""Membership inference by the loss-threshold attack: lower denoising loss ⇒ "member".

Per timestep: AUC (probability a random member scores below a random non-member) and the true-positive
rate at 1% false positives; the attack's timestep is chosen on one half of the images and its AUC
measured on the other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from memguard.diffusion.models import DiffusionModel
from memguard.diffusion.sampling import denoising_losses
from memguard.extract.config import AuditConfig, device_of
from memguard.extract.stratify import bucket_of


def roc_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """AUC of "score is higher for members" (ties counted half), by scikit-learn."""
    labels = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    return float(roc_auc_score(labels, np.concatenate([member_scores, nonmember_scores])))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float = 0.01) -> float:
    """Share of members above the threshold that only ``fpr`` of non-members exceed."""
    threshold = np.quantile(nonmember_scores, 1.0 - fpr, method="higher")
    return float((member_scores > threshold).mean())


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def loss_attack(
    member_losses: np.ndarray, nonmember_losses: np.ndarray, timesteps: list[int], *, seed: int = 0
) -> dict[str, object]:
    """Inputs (N, T) per-sample losses; the attack score is the negative loss.

    The timestep is a choice the attacker makes, so it is chosen on one half of the members and
    non-members (seeded) and the reported ``auc`` / ``tpr_at_1pct_fpr`` are measured on the other half:
    choosing and measuring on the same images would overstate the leak. ``per_timestep`` is the sweep on
    all of them. With fewer than 4 of either, both halves are everything (``timestep_chosen_on``)."""

    def scores(m: np.ndarray, n: np.ndarray, j: int) -> dict[str, float]:
        return {
            "auc": round(roc_auc(-m[:, j], -n[:, j]), 4),
            "tpr_at_1pct_fpr": round(tpr_at_fpr(-m[:, j], -n[:, j]), 4),
        }

    per_t = {str(t): scores(member_losses, nonmember_losses, j) for j, t in enumerate(timesteps)}
    if min(len(member_losses), len(nonmember_losses)) >= 4:
        rng = np.random.default_rng(seed)
        (m_pick, m_eval), (n_pick, n_eval) = _halves(len(member_losses), rng), _halves(len(nonmember_losses), rng)
        chosen_on = "a separate half of the members and non-members"
    else:
        m_pick = m_eval = np.arange(len(member_losses))
        n_pick = n_eval = np.arange(len(nonmember_losses))
        chosen_on = "the same images (too few for two halves)"
    picking = [roc_auc(-member_losses[m_pick, j], -nonmember_losses[n_pick, j]) for j in range(len(timesteps))]
    best = int(np.argmax(picking))
    measured = scores(member_losses[m_eval], nonmember_losses[n_eval], best)
    return {
        "per_timestep": per_t,
        "best_timestep": int(timesteps[best]),
        "timestep_chosen_on": chosen_on,
        "auc": measured["auc"],
        "tpr_at_1pct_fpr": measured["tpr_at_1pct_fpr"],
        "members": len(member_losses),
        "nonmembers": len(nonmember_losses),
    }


def membership_inference(
    model: DiffusionModel,
    *,
    members: np.ndarray,
    member_captions: list[str] | None,
    member_counts: np.ndarray,
    nonmembers: np.ndarray,
    nonmember_captions: list[str] | None,
    cfg: AuditConfig,
) -> dict[str, Any]:
    """Loss-threshold membership inference; also per duplicate-count bucket at the best timestep."""
    device = device_of(cfg)
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(len(members), min(cfg.mia_samples, len(members)), replace=False))
    to_pixels = lambda x: x.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0  # noqa: E731
    caps = [member_captions[i] for i in pick] if member_captions else None
    lm = denoising_losses(
        model, to_pixels(members[pick]), cfg.mia_timesteps, seed=cfg.seed, captions=caps, device=device
    )
    ln = denoising_losses(
        model, to_pixels(nonmembers), cfg.mia_timesteps, seed=cfg.seed, captions=nonmember_captions, device=device
    )
    result = loss_attack(lm, ln, list(cfg.mia_timesteps), seed=cfg.seed)
    j = list(cfg.mia_timesteps).index(int(result["best_timestep"]))  # type: ignore[call-overload]
    buckets = np.array([bucket_of(int(c)) for c in member_counts[pick]])
    result["auc_by_duplicate_count"] = {
        b: round(roc_auc(-lm[buckets == b, j], -ln[:, j]), 4) for b in sorted(set(buckets.tolist()))
    }
    result["heldout_loss"] = round(float(ln.mean()), 6)
    result["member_loss"] = round(float(lm.mean()), 6)
    return result
