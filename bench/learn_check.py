"""Does a from-scratch model learn on the built-in corpus? Held-out denoising loss before/after and a grid.

    python bench/learn_check.py [--kind unet_text] [--steps 2000] [--batch 64] [--out runs/learn_check]

Writes train/ (checkpoints, samples/ grids, TensorBoard), learn_check.json and grid.png (captions of
held-out emoji — never trained on — as prompts for a text model).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from memguard.corpus.twemoji import TwemojiConfig, build_twemoji
from memguard.diffusion.images import load_image_set
from memguard.diffusion.models import ModelConfig, build_model
from memguard.diffusion.sampling import denoising_losses, generate, grid
from memguard.train.config import TrainConfig
from memguard.train.loop import train_model

TIMESTEPS = [50, 100, 200, 400, 700]


def heldout_loss(model, heldout, captions) -> float:  # type: ignore[no-untyped-def]
    pixels = heldout.pixels(np.arange(len(heldout)))
    return float(denoising_losses(model, pixels, TIMESTEPS, seed=0, captions=captions).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", default="unet_text")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--subset", type=int, default=1000)
    parser.add_argument("--cache", default=".cache")
    parser.add_argument("--out", type=Path, default=Path("runs/learn_check"))
    args = parser.parse_args()
    corpus = build_twemoji(TwemojiConfig(resolution=32, subset=args.subset), Path(args.cache) / "corpus")
    data = load_image_set(str(corpus.train), 16, args.cache)
    heldout = load_image_set(str(corpus.heldout), 16, args.cache)
    model = build_model(ModelConfig(kind=args.kind, resolution=16))
    captions = heldout.captions if model.conditional else None
    before = heldout_loss(model, heldout, captions)
    start = time.perf_counter()
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=1e-3,
        sample_every=max(1, args.steps // 3),
        sample_count=32,
        checkpoint_every=500,
    )
    train_model(model, data, cfg, out_dir=args.out / "train")
    seconds = time.perf_counter() - start
    after = heldout_loss(model, heldout, captions)
    prompts = heldout.captions[:32] if model.conditional else None
    images = generate(model, list(range(32)), seed=1, steps=50, captions=prompts, guidance=3.0, batch_size=32, progress=False)
    both = np.concatenate([np.asarray(heldout.images[:32]), images]) if model.conditional else images
    Image.fromarray(grid(both, 16)).resize((16 * 18 * 3, (len(both) // 16) * 18 * 3), Image.NEAREST).save(
        args.out / "grid.png"
    )
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "kind": args.kind,
        "steps": args.steps,
        "batch": args.batch,
        "train_samples": len(data),
        "heldout": len(heldout),
        "heldout_loss_before": round(before, 5),
        "heldout_loss_after": round(after, 5),
        "train_seconds": round(seconds, 1),
        "prompts": prompts,
    }
    (args.out / "learn_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "prompts"}, indent=2))


if __name__ == "__main__":
    main()
