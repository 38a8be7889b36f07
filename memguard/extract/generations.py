"""Generations for the audit (chunked, seeded per index, resumable) and the figures made from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from memguard.common.atomic import atomic_path
from memguard.common.progress import progress_label
from memguard.diffusion.models import DiffusionModel
from memguard.diffusion.sampling import generate, grid
from memguard.extract.config import AuditConfig, device_of


def generate_resumable(
    model: DiffusionModel,
    count: int,
    *,
    cfg: AuditConfig,
    folder: Path,
    captions: list[str] | None = None,
    first_index: int = 0,
) -> np.ndarray:
    """Generations saved chunk by chunk (atomically) under ``folder``: a killed audit resumes where it stopped,
    and because every generation is seeded by its own index the resumed images are identical. Every batch has
    ``min(cfg.batch_size, count)`` rows: a function of the configuration, which keys the audit's cache, so the
    images do not depend on how a run was interrupted (``memguard.diffusion.sampling.generate``: why the shape matters)."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = []
    rows = min(cfg.batch_size, count)
    starts = range(0, count, rows)
    # Compiled once per call: every batch has the same shape, so it compiles once.
    net = torch.compile(model.unet) if cfg.enabled("compile") and count else None
    for lo in tqdm(starts, desc=progress_label("generate"), unit="batch", disable=len(starts) < 2, mininterval=1.0):
        ids = list(range(first_index + lo, first_index + min(count, lo + rows)))
        path = folder / f"{ids[0]:08d}-{len(ids)}.npy"
        if path.exists():
            chunks.append(np.load(path, allow_pickle=False))
            continue
        caps = captions[lo : lo + len(ids)] if captions is not None else None
        images = generate(
            model,
            ids,
            seed=cfg.seed,
            steps=cfg.sample_steps,
            captions=caps,
            guidance=cfg.guidance,
            batch_size=rows,
            device=device_of(cfg),
            progress=False,
            unet=net,
            bf16=cfg.enabled("bf16"),
        )
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, images, allow_pickle=False)
        chunks.append(images)
    return np.concatenate(chunks)


CELL = 64  # pixels per image in the figures: an 8-px generation shown at its size is unreadable


def save_grid(images: np.ndarray, path: Path, labels: list[str] | None = None, *, columns: int = 8) -> None:
    """Up to 64 images, each enlarged (nearest neighbour) to at least CELL pixels, with its label below."""
    images = images[:64]
    h, w = images.shape[1:3]
    scale = max(1, -(-CELL // max(h, w)))
    if labels is None:
        big = [Image.fromarray(im).resize((w * scale, h * scale), Image.Resampling.NEAREST) for im in images]
        with atomic_path(path) as tmp:
            Image.fromarray(grid(np.stack([np.asarray(b) for b in big]), columns)).save(tmp, format="PNG")
        return
    cell_w, cell_h = max(w * scale, 96) + 6, h * scale + 16
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, label) in enumerate(zip(images, labels, strict=False)):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        sheet.paste(Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.NEAREST), (x + 3, y + 2))
        draw.text((x + 3, y + h * scale + 3), label[:16], fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def side_by_side(pairs: list[tuple[np.ndarray, np.ndarray, float]], path: Path, scale: int = 4) -> None:
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
