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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from common.atomic import atomic_path, write_json, write_table
from dedup.signals.embed import EmbedderParams, make_embedder
from diffusion.models import DiffusionModel
from diffusion.sampling import denoising_losses, generate, grid
from extract.attacks import generate_and_filter, unconditional_attack
from extract.distances import pairwise_l2
from extract.membership import loss_attack, roc_auc
from extract.reference import Reference
from extract.stratify import bucket_of, extraction_by_bucket
from extract.wen import wen_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditConfig:
    """Unconditional: ``generations`` samples, extracted if normalized ℓ2 < ``delta`` (also reported at
    every value of ``deltas``). Conditional: the ``top_k`` most duplicated captions plus ``control_prompts``
    singletons, ``per_prompt`` generations each; edges where tiled ℓ2 < ``tau``; a clique ≥ ``min_clique``
    flags a prompt; ℓ2 ≤ ``verify_l2`` to the training image confirms it."""

    generations: int = 1000
    sample_steps: int = 25
    guidance: float = 3.0
    seed: int = 1
    alpha: float = 0.5
    n_nearest: int = 50
    delta: float = 0.3
    deltas: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
    top_k: int = 16
    control_prompts: int = 16
    per_prompt: int = 16
    tau: float = 0.15
    min_clique: int = 5
    verify_l2: float = 0.15
    tile_grid: int = 4
    mia_timesteps: tuple[int, ...] = (10, 50, 100, 200, 400)
    mia_samples: int = 500
    wen_generations: int = 4
    wen_first_steps: int = 1
    copy_thresholds: tuple[float, ...] = (0.5, 0.4)
    batch_size: int = 250
    device: str | None = None


def _device(cfg: AuditConfig) -> str:
    return cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _copy_similarity(generated: np.ndarray, reference: Reference, thresholds: tuple[float, ...]) -> dict[str, Any]:
    """Somepalli's copy metric in the dedup embedder's space (pixels unless configured otherwise)."""
    embedder = make_embedder(EmbedderParams())
    gen, ref = embedder.embed(list(generated)), embedder.embed(list(reference.images))
    best = (gen @ ref.T).max(axis=1) if len(gen) and len(ref) else np.zeros(0)
    return {
        "embedder": "pixels",
        "p95": round(float(np.percentile(best, 95)), 4) if len(best) else None,
        "max": round(float(best.max()), 4) if len(best) else None,
        **{f"share_above_{t}": round(float((best > t).mean()), 4) for t in thresholds},
    }


def _side_by_side(pairs: list[tuple[np.ndarray, np.ndarray, float]], path: Path, scale: int = 4) -> None:
    """Each extracted generation beside its training image, with the distance."""
    if not pairs:
        return
    h, w = pairs[0][0].shape[:2]
    cell_w, cell_h = 2 * w * scale + 12, h * scale + 16
    cols = 4
    rows = -(-len(pairs) // cols)
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (gen, train, dist) in enumerate(pairs):
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        sheet.paste(Image.fromarray(gen).resize((w * scale, h * scale), Image.Resampling.NEAREST), (x + 2, y + 2))
        sheet.paste(
            Image.fromarray(train).resize((w * scale, h * scale), Image.Resampling.NEAREST), (x + 6 + w * scale, y + 2)
        )
        draw.text((x + 2, y + h * scale + 3), f"{dist:.3f}", fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def _closest(image: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    return candidates[int(np.argmin(pairwise_l2(image[None], candidates)[0]))]


def generate_resumable(
    model: DiffusionModel,
    count: int,
    cfg: AuditConfig,
    folder: Path,
    captions: list[str] | None = None,
    first_index: int = 0,
) -> np.ndarray:
    """Generations saved chunk by chunk (atomically) under ``folder``: a killed audit resumes where it stopped,
    and because every generation is seeded by its own index the resumed images are identical."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = []
    starts = range(0, count, cfg.batch_size)
    for lo in tqdm(starts, desc="generate", unit="batch", disable=len(starts) < 2, mininterval=1.0):
        ids = list(range(first_index + lo, first_index + min(count, lo + cfg.batch_size)))
        path = folder / f"{ids[0]:08d}-{len(ids)}.npy"
        if path.exists():
            chunks.append(np.load(path, allow_pickle=False))
            continue
        caps = captions[lo : lo + len(ids)] if captions is not None else None
        images = generate(
            model,
            ids,
            cfg.seed,
            cfg.sample_steps,
            caps,
            cfg.guidance,
            cfg.batch_size,
            device=_device(cfg),
            progress=False,
        )
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, images, allow_pickle=False)
        chunks.append(images)
    return np.concatenate(chunks)


def _save_png(images: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(grid(images[:64])).save(tmp, format="PNG")


def audit_unconditional(model: DiffusionModel, reference: Reference, cfg: AuditConfig, out_dir: Path) -> dict[str, Any]:
    generated = generate_resumable(model, cfg.generations, cfg, out_dir / "generations")
    _save_png(generated, out_dir / "generations.png")
    copies, copy_of = reference.training_copies()
    result = unconditional_attack(generated, copies, cfg.alpha, cfg.n_nearest, device=cfg.device, groups=copy_of)
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
    _side_by_side(pairs, out_dir / "extracted.png")
    at_delta = {str(d): int(np.unique(result.nearest[result.score < d]).size) for d in cfg.deltas}
    return {
        "attack": "unconditional",
        "generations": len(generated),
        "extracted_generations": int(hit.sum()),
        "extracted_images": int(extracted_images.sum()),
        "extracted_images_by_delta": at_delta,
        "extracted_duplicated_images": int((extracted_images & (reference.dup_counts > 1)).sum()),
        "by_duplicate_count": extraction_by_bucket(reference.dup_counts, extracted_images),
        "normalized_l2_percentiles": {str(p): round(float(np.percentile(result.score, p)), 4) for p in (1, 5, 50)},
        "copy_similarity": _copy_similarity(generated, reference, cfg.copy_thresholds),
    }


def audit_conditional(model: DiffusionModel, reference: Reference, cfg: AuditConfig, out_dir: Path) -> dict[str, Any]:
    device = _device(cfg)
    order = np.lexsort((np.arange(len(reference.keys)), -reference.dup_counts))
    top = [int(i) for i in order[: cfg.top_k] if reference.dup_counts[i] > 1]
    singles = np.flatnonzero((reference.dup_counts == 1) & reference.trained)
    rng = np.random.default_rng(cfg.seed)
    control = (
        rng.choice(singles, min(cfg.control_prompts, len(singles)), replace=False).tolist() if len(singles) else []
    )
    chosen = top + [int(i) for i in control]
    prompts = [reference.captions[i] for i in chosen]
    rows: dict[str, list[Any]] = {
        k: [] for k in ("generation", "prompt", "nearest_key", "l2", "normalized_l2", "duplicate_count", "extracted")
    }
    verdicts, all_generations, pairs = [], [], []
    for p, (i, prompt) in enumerate(zip(chosen, prompts, strict=True)):
        ids = list(range(p * cfg.per_prompt, (p + 1) * cfg.per_prompt))
        gens = generate_resumable(model, len(ids), cfg, out_dir / "generations", [prompt] * len(ids), ids[0])
        all_generations.append(gens[:2])
        copies = reference.copies_of(i)
        verdict = generate_and_filter(gens, copies, cfg.tau, cfg.min_clique, cfg.verify_l2, cfg.tile_grid)
        verdicts.append(verdict)
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
    if all_generations:
        _save_png(np.concatenate(all_generations), out_dir / "generations.png")
    _side_by_side(pairs, out_dir / "extracted.png")
    extracted = np.zeros(len(reference.keys), bool)
    extracted[[i for i, v in zip(chosen, verdicts, strict=True) if v.extracted]] = True
    prompted = np.zeros(len(reference.keys), bool)
    prompted[chosen] = True
    wen = wen_scores(model, prompts, cfg.wen_generations, cfg.sample_steps, cfg.wen_first_steps, cfg.seed, device)
    labels = np.array([v.extracted for v in verdicts])
    dup_labels = np.array([reference.dup_counts[i] > 1 for i in chosen])
    return {
        "attack": "generate_and_filter",
        "prompts": len(prompts),
        "flagged_prompts": int(sum(v.flagged for v in verdicts)),
        "extracted_images": int(extracted.sum()),
        "extracted_duplicated_images": int((extracted & (reference.dup_counts > 1)).sum()),
        "by_duplicate_count": {
            k: v
            for k, v in extraction_by_bucket(reference.dup_counts[prompted], extracted[prompted]).items()
            if v["images"]
        },
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
        ),
    }


def membership(
    model: DiffusionModel,
    members: np.ndarray,
    member_captions: list[str] | None,
    member_counts: np.ndarray,
    nonmembers: np.ndarray,
    nonmember_captions: list[str] | None,
    cfg: AuditConfig,
) -> dict[str, Any]:
    """Loss-threshold membership inference; also per duplicate-count bucket at the best timestep."""
    device = _device(cfg)
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(len(members), min(cfg.mia_samples, len(members)), replace=False))
    to_pixels = lambda x: x.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0  # noqa: E731
    caps = [member_captions[i] for i in pick] if member_captions else None
    lm = denoising_losses(model, to_pixels(members[pick]), cfg.mia_timesteps, cfg.seed, caps, device=device)
    ln = denoising_losses(model, to_pixels(nonmembers), cfg.mia_timesteps, cfg.seed, nonmember_captions, device=device)
    result = loss_attack(lm, ln, list(cfg.mia_timesteps))
    j = list(cfg.mia_timesteps).index(int(result["best_timestep"]))  # type: ignore[call-overload]
    buckets = np.array([bucket_of(int(c)) for c in member_counts[pick]])
    result["auc_by_duplicate_count"] = {
        b: round(roc_auc(-lm[buckets == b, j], -ln[:, j]), 4) for b in sorted(set(buckets.tolist()))
    }
    result["heldout_loss"] = round(float(ln.mean()), 6)
    result["member_loss"] = round(float(lm.mean()), 6)
    return result


def audit(
    model: DiffusionModel,
    reference: Reference,
    heldout: np.ndarray,
    heldout_captions: list[str] | None,
    cfg: AuditConfig,
    out_dir: str | Path,
) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.unet.eval().to(_device(cfg))
    if model.conditional:
        metrics = audit_conditional(model, reference, cfg, out)
    else:
        metrics = audit_unconditional(model, reference, cfg, out)
    members = np.flatnonzero(reference.trained)
    captions = [reference.captions[i] for i in members] if model.conditional else None
    metrics["membership"] = membership(
        model,
        reference.images[members],
        captions,
        reference.dup_counts[members],
        heldout,
        heldout_captions if model.conditional else None,
        cfg,
    )
    metrics["config"] = asdict(cfg)
    write_json(out / "metrics.json", metrics)
    return metrics
