"""The extraction stage: generate, compare with the training images, and measure memorization.

The reference set is one image per duplicate cluster of the RAW corpus (its keeper), with the cluster's
size as the image's duplicate count, plus every copy in the cluster: a generation's distance to an image
is its distance to the closest copy (the model may have learned any of them), and Carlini's normalizing
neighbourhood counts each image once. Both arms of an experiment are audited against the same set, so
"extracted" means the same thing for each. Outputs: ``matches.parquet``, ``metrics.json``,
``extracted.png`` and a grid of generations.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from memguard.common.atomic import write_json, write_table
from memguard.dedup.signals.embed import EmbedderParams, make_embedder, view_layout
from memguard.dedup.signals.views import best_match
from memguard.diffusion.models import DiffusionModel
from memguard.extract.attacks import generate_and_filter, unconditional_attack
from memguard.extract.config import AuditConfig, device_of
from memguard.extract.distances import pairwise_l2
from memguard.extract.featureless import featureless
from memguard.extract.generations import generate_resumable, save_grid, side_by_side
from memguard.extract.membership import membership_inference, roc_auc
from memguard.extract.reference import Reference
from memguard.extract.stratify import extraction_by_bucket
from memguard.extract.wen import wen_scores

log = logging.getLogger(__name__)


def _copy_similarity(
    generated: np.ndarray, reference: Reference, thresholds: tuple[float, ...], *, params: EmbedderParams
) -> dict[str, Any]:
    """Somepalli's copy metric: the highest cosine of each generation with a training image, in the space
    of the embedder dedup was configured with (the same one that decided what a duplicate is)."""
    embedder = make_embedder(params)
    gen, ref = embedder.embed(list(generated)), embedder.embed(list(reference.images))
    best = best_match(gen, ref, view_layout(params.kind))[0] if len(gen) and len(ref) else np.zeros(0)
    return {
        "embedder": params.kind,
        "p95": round(float(np.percentile(best, 95)), 4) if len(best) else None,
        "max": round(float(best.max()), 4) if len(best) else None,
        **{f"share_above_{t}": round(float((best > t).mean()), 4) for t in thresholds},
    }


def _closest(image: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    return candidates[int(np.argmin(pairwise_l2(image[None], candidates)[0]))]


def audit_unconditional(
    model: DiffusionModel, reference: Reference, *, cfg: AuditConfig, out_dir: Path, embedder: EmbedderParams
) -> dict[str, Any]:
    generated = generate_resumable(model, cfg.generations, cfg=cfg, folder=out_dir / "generations")
    save_grid(generated, out_dir / "generations.png")
    copies, copy_of = reference.training_copies()
    result = unconditional_attack(
        generated, copies, alpha=cfg.alpha, n=cfg.n_nearest, device=cfg.device, groups=copy_of
    )
    hit = result.score < cfg.delta
    extracted_images = np.zeros(len(reference.keys), bool)
    extracted_images[np.unique(result.nearest[hit])] = True
    write_table(
        out_dir / "matches.parquet",
        pa.table(
            {
                "generation": np.arange(len(generated)),
                "prompt": [""] * len(generated),
                "nearest_key": [reference.keys[i] for i in result.nearest],
                "l2": result.l2,
                "normalized_l2": result.score,
                "duplicate_count": reference.dup_counts[result.nearest],
                "extracted": hit,
            }
        ),
    )
    best: dict[int, tuple[float, int]] = {}
    for g in np.flatnonzero(hit):
        j = int(result.nearest[g])
        if j not in best or result.score[g] < best[j][0]:
            best[j] = (float(result.score[g]), int(g))
    pairs = [
        (generated[g], _closest(generated[g], reference.copies_of(j)), float(result.l2[g]))
        for j, (_, g) in sorted(best.items())
    ]
    side_by_side(pairs, out_dir / "extracted.png")
    at_delta = {str(d): int(np.unique(result.nearest[result.score < d]).size) for d in cfg.deltas}
    extracted_index = np.flatnonzero(extracted_images)
    flat = featureless(
        reference.images,
        extracted_index,
        copies,
        groups=copy_of,
        delta=cfg.delta,
        factor=cfg.featureless_factor,
        alpha=cfg.alpha,
        n=cfg.n_nearest,
        device=cfg.device,
    )
    return {
        "attack": "unconditional",
        "generations": len(generated),
        "extracted_generations": int(hit.sum()),
        "extracted_images": int(extracted_images.sum()),
        # Of those, images a blur of their own mean colour would pass for (memguard/extract/featureless.py): counted
        # as Carlini counts them, named here so that a reader can tell them from memorized detail.
        "extracted_featureless_images": int(flat.sum()),
        "featureless_keys": [reference.keys[i] for i in extracted_index[flat]],
        "extracted_images_by_delta": at_delta,
        "extracted_duplicated_images": int((extracted_images & (reference.dup_counts > 1)).sum()),
        "by_duplicate_count": extraction_by_bucket(reference.dup_counts, extracted_images),
        "normalized_l2_percentiles": {str(p): round(float(np.percentile(result.score, p)), 4) for p in (1, 5, 50)},
        "copy_similarity": _copy_similarity(generated, reference, cfg.copy_thresholds, params=embedder),
    }


def audit_conditional(
    model: DiffusionModel, reference: Reference, *, cfg: AuditConfig, out_dir: Path, embedder: EmbedderParams
) -> dict[str, Any]:
    device = device_of(cfg)
    chosen = audited_prompts(reference, cfg)
    prompts = [reference.captions[i] for i in chosen]
    rows: dict[str, list[Any]] = {
        k: [] for k in ("generation", "prompt", "nearest_key", "l2", "normalized_l2", "duplicate_count", "extracted")
    }
    verdicts, all_generations, pairs, nearest = [], [], [], []
    for p, (i, prompt) in enumerate(zip(chosen, prompts, strict=True)):
        ids = list(range(p * cfg.per_prompt, (p + 1) * cfg.per_prompt))
        gens = generate_resumable(
            model, len(ids), cfg=cfg, folder=out_dir / "generations", captions=[prompt] * len(ids), first_index=ids[0]
        )
        all_generations.append(gens[:2])
        copies = reference.copies_of(i)
        verdict = generate_and_filter(
            gens, copies, tau=cfg.tau, min_clique=cfg.min_clique, verify_l2=cfg.verify_l2, grid=cfg.tile_grid
        )
        verdicts.append(verdict)
        nearest.append(float(pairwise_l2(gens, copies).min()))
        if verdict.extracted:
            pairs.append((gens[verdict.best_generation], copies[verdict.best_image], verdict.best_l2))
        for name, value in (
            ("generation", ids[verdict.best_generation]),
            ("prompt", prompt),
            ("nearest_key", reference.keys[i]),
            ("l2", verdict.best_l2),
            ("normalized_l2", float("nan")),
            ("duplicate_count", int(reference.dup_counts[i])),
            ("extracted", verdict.extracted),
        ):
            rows[name].append(value)
    write_table(out_dir / "matches.parquet", pa.table(rows))
    if all_generations:  # two generations per prompt, labelled with the caption's copies and the caption
        shown = [
            f"x{reference.dup_counts[i]} {reference.captions[i]}" for i in chosen for _ in range(min(2, cfg.per_prompt))
        ]
        save_grid(np.concatenate(all_generations), out_dir / "generations.png", shown)
    side_by_side(pairs, out_dir / "extracted.png")
    extracted = np.zeros(len(reference.keys), bool)
    extracted[[i for i, v in zip(chosen, verdicts, strict=True) if v.extracted]] = True
    near = np.asarray(nearest)
    wen = wen_scores(
        model,
        prompts,
        generations=cfg.wen_generations,
        steps=cfg.sample_steps,
        first_steps=cfg.wen_first_steps,
        seed=cfg.seed,
        device=device,
    )
    labels = np.array([v.extracted for v in verdicts])
    dup_labels = np.array([reference.dup_counts[i] > 1 for i in chosen])
    return {
        "attack": "generate_and_filter",
        "prompts": len(prompts),
        "flagged_prompts": int(sum(v.flagged for v in verdicts)),
        "extracted_images": int(extracted.sum()),
        "extracted_duplicated_images": int((extracted & (reference.dup_counts > 1)).sum()),
        "by_duplicate_count": _prompted_buckets(reference, chosen, extracted),
        "nearest_l2": _nearest_l2_summary(reference, chosen, near, cfg=cfg),
        "wen": {
            "scores": [round(float(s), 4) for s in wen],
            "auc_extracted": round(roc_auc(wen[labels], wen[~labels]), 4) if labels.any() and (~labels).any() else None,
            "auc_duplicated": round(roc_auc(wen[dup_labels], wen[~dup_labels]), 4)
            if dup_labels.any() and (~dup_labels).any()
            else None,
        },
        "copy_similarity": _copy_similarity(
            np.concatenate(all_generations)
            if all_generations
            else np.zeros((0, *reference.images.shape[1:]), np.uint8),
            reference,
            cfg.copy_thresholds,
            params=embedder,
        ),
    }


def audited_prompts(reference: Reference, cfg: AuditConfig) -> list[int]:
    """The images whose captions are prompted: the most duplicated first (all of them by default), then
    an equal number (by default) of trained singletons drawn at random as controls."""
    order = np.lexsort((np.arange(len(reference.keys)), -reference.dup_counts))
    duplicated = [int(i) for i in order if reference.dup_counts[i] > 1]
    top = duplicated if cfg.top_k is None else duplicated[: cfg.top_k]
    singles = np.flatnonzero((reference.dup_counts == 1) & reference.trained)
    wanted = len(top) if cfg.control_prompts is None else cfg.control_prompts
    rng = np.random.default_rng(cfg.seed)
    control = rng.choice(singles, min(wanted, len(singles)), replace=False).tolist() if len(singles) else []
    return top + [int(i) for i in control]


def _prompted_buckets(reference: Reference, chosen: list[int], hit: np.ndarray) -> dict[str, Any]:
    prompted = np.zeros(len(reference.keys), bool)
    prompted[chosen] = True
    table = extraction_by_bucket(reference.dup_counts[prompted], hit[prompted])
    return {k: v for k, v in table.items() if v["images"]}


def _nearest_l2_summary(
    reference: Reference, chosen: list[int], nearest: np.ndarray, *, cfg: AuditConfig
) -> dict[str, Any]:
    """The nearest-image criterion: per prompt, the ℓ2 of its closest generation to the caption's
    training image(s); a prompt counts at threshold d when that ℓ2 ≤ d. Duplicated vs control prompts."""
    duplicated = reference.dup_counts[chosen] > 1
    hit = np.zeros(len(reference.keys), bool)
    hit[[i for i, d in zip(chosen, nearest, strict=True) if d <= cfg.nearest_l2]] = True

    def median(mask: np.ndarray) -> float | None:
        return round(float(np.median(nearest[mask])), 4) if mask.any() else None

    return {
        "threshold": cfg.nearest_l2,
        "extracted_images": int(hit.sum()),
        "extracted_duplicated_images": int((hit & (reference.dup_counts > 1)).sum()),
        "by_threshold": {str(d): int((nearest <= d).sum()) for d in cfg.nearest_l2s},
        "median_duplicated": median(duplicated),
        "median_control": median(~duplicated),
        "by_duplicate_count": _prompted_buckets(reference, chosen, hit),
    }


def audit(
    model: DiffusionModel,
    reference: Reference,
    *,
    heldout: np.ndarray,
    heldout_captions: list[str] | None,
    cfg: AuditConfig,
    out_dir: str | Path,
    embedder: EmbedderParams | None = None,
) -> dict[str, Any]:
    """Attack ``model`` (Carlini's unconditional attack, or generate-and-filter for a conditional model),
    run membership inference against ``heldout`` (and Wen's detector for conditional models), measure copy
    similarity, stratify everything by duplicate count, and write matches.parquet, metrics.json and
    figures under ``out_dir``. Generation is chunked and resumable: a killed audit continues. Copy
    similarity uses ``embedder`` — pass the dedup stage's, so that "copy" and "duplicate" mean one thing."""
    embedder = embedder or EmbedderParams()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.unet.eval().to(device_of(cfg))
    if model.conditional:
        metrics = audit_conditional(model, reference, cfg=cfg, out_dir=out, embedder=embedder)
    else:
        metrics = audit_unconditional(model, reference, cfg=cfg, out_dir=out, embedder=embedder)
    members = np.flatnonzero(reference.trained)
    captions = [reference.captions[i] for i in members] if model.conditional else None
    metrics["membership"] = membership_inference(
        model,
        members=reference.images[members],
        member_captions=captions,
        member_counts=reference.dup_counts[members],
        nonmembers=heldout,
        nonmember_captions=heldout_captions if model.conditional else None,
        cfg=cfg,
    )
    metrics["config"] = asdict(cfg)
    write_json(out / "metrics.json", metrics)
    return metrics
