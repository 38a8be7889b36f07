"""Training throughput: our loop vs a plain diffusers + torch loop, same model, data and machine, one run.

    python bench/train_bench.py [--steps 200] [--batch 64] [--resolution 16] [--device cpu|cuda] [--out FILE]

On a GPU pass --bf16 --channels-last --compile --fused to measure the fast path of our loop.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from memguard.corpus.twemoji import TwemojiConfig, build_twemoji
from memguard.diffusion.images import load_image_set
from memguard.diffusion.models import ModelConfig, build_model
from memguard.train.config import TrainConfig
from memguard.train.loop import train_model


def plain_loop(model_cfg: ModelConfig, data, steps: int, batch: int, device: str) -> float:  # type: ignore[no-untyped-def]
    """The loop of diffusers' train_unconditional example, reduced to its arithmetic."""
    torch.manual_seed(0)
    unet: UNet2DModel = build_model(model_cfg).unet.to(device)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=model_cfg.beta_schedule)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    ema = EMAModel(unet.parameters(), decay=0.999)
    rng = np.random.default_rng(0)
    start = 0.0
    for step in range(steps + 10):
        if step == 10:  # warm-up steps excluded from timing
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        x0 = torch.from_numpy(data.pixels(rng.integers(0, len(data), batch))).to(device)
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,), device=device)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        ema.step(unet.parameters())
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def ours(model_cfg: ModelConfig, data, steps: int, batch: int, args: argparse.Namespace) -> float:  # type: ignore[no-untyped-def]
    cfg = TrainConfig(
        steps=steps + 10,
        batch_size=batch,
        checkpoint_every=0,
        sample_every=0,
        log_every=10**9,
        mixed_precision="bf16" if args.bf16 else "no",
        channels_last=args.channels_last,
        compile=args.compile,
        fused_adam=args.fused,
        warmup_steps=1,
    )
    model = build_model(model_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_model(model, data, cfg, out_dir=tmp)
    return result.images_per_second


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--channels", default="32,64,64")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--fused", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--cache", default=".cache")
    parser.add_argument("--out", default="bench/train_results.json")
    args = parser.parse_args()
    corpus = build_twemoji(TwemojiConfig(resolution=args.resolution, subset=1000), Path(args.cache) / "corpus")
    data = load_image_set(str(corpus.train), args.resolution, args.cache)
    model_cfg = ModelConfig(
        kind="unet_uncond", resolution=args.resolution, channels=tuple(int(c) for c in args.channels.split(","))
    )
    # Alternate the two loops and take medians: on a shared 2-core machine one timing of each drifts by
    # ±15% between runs, more than the difference being measured.
    plains, mines = [], []
    for _ in range(args.repeats):
        plains.append(plain_loop(model_cfg, data, args.steps, args.batch, args.device))
        mines.append(ours(model_cfg, data, args.steps, args.batch, args))
    plain, mine = statistics.median(plains), statistics.median(mines)
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
        "model": f"UNet2DModel {args.channels} at {args.resolution}px",
        "batch": args.batch,
        "steps": args.steps,
        "plain_images_per_s": round(plain, 1),
        "ours_images_per_s": round(mine, 1),
        "speedup": round(mine / plain, 3),
        "rounds": {"plain": [round(v, 1) for v in plains], "ours": [round(v, 1) for v in mines]},
        "flags": {k: getattr(args, k) for k in ("bf16", "channels_last", "compile", "fused")},
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
