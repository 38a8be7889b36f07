"""Extraction throughput, one run: our batched generation vs the stock diffusers pipeline call at the same
number of DDIM steps; and distance throughput (pairwise ℓ2, normalized ℓ2).

    python bench/extract_bench.py [--samples 1000] [--steps 25] [--bf16] [--compile] [--out FILE]

``--bf16`` / ``--compile``: our generation under bfloat16 autocast / with the unet compiled, as the audit
runs on a GPU (``extract.bf16``, ``extract.compile``); the stock pipeline runs as diffusers ships it (fp32).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMPipeline, DDIMScheduler

from memguard.diffusion.models import ModelConfig, build_model
from memguard.diffusion.sampling import generate
from memguard.extract.distances import normalized_l2, pairwise_l2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--training", type=int, default=20000, help="training images in the distance timings")
    parser.add_argument("--out", default="bench/extract_results.json")
    args = parser.parse_args()
    model = build_model(ModelConfig(kind="unet_uncond", resolution=args.resolution))
    model.unet.to(args.device).eval()
    pipe = DDIMPipeline(unet=model.unet, scheduler=DDIMScheduler.from_config(model.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    net = torch.compile(model.unet) if args.compile else None
    fast = {"unet": net, "bf16": args.bf16}
    # Warm both paths up first (compilation, kernel selection, allocator): only steady state is timed.
    generate(model, list(range(args.batch)), seed=0, steps=2, batch_size=args.batch, device=args.device,
             progress=False, **fast)  # fmt: skip
    pipe(batch_size=args.batch, num_inference_steps=2, output_type="np")
    start = time.perf_counter()
    generate(
        model,
        list(range(args.samples)),
        seed=0,
        steps=args.steps,
        batch_size=args.batch,
        device=args.device,
        progress=False,
        **fast,
    )
    if args.device == "cuda":
        torch.cuda.synchronize()
    ours = args.samples / (time.perf_counter() - start)
    start = time.perf_counter()
    for lo in range(0, args.samples, args.batch):
        pipe(batch_size=min(args.batch, args.samples - lo), num_inference_steps=args.steps, output_type="np")
    stock = args.samples / (time.perf_counter() - start)
    rng = np.random.default_rng(0)
    gen = rng.integers(0, 256, (2000, args.resolution, args.resolution, 3), dtype=np.uint8)
    train = rng.integers(0, 256, (args.training, args.resolution, args.resolution, 3), dtype=np.uint8)
    start = time.perf_counter()
    pairwise_l2(gen, train, device=args.device)
    pairs_per_s = len(gen) * len(train) / (time.perf_counter() - start)
    start = time.perf_counter()
    normalized_l2(gen, train, device=args.device)
    norm_per_s = len(gen) / (time.perf_counter() - start)
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, device {args.device}",
        "samples": args.samples,
        "ddim_steps": args.steps,
        "ours_samples_per_s": round(ours, 2),
        "stock_pipeline_samples_per_s": round(stock, 2),
        "speedup": round(ours / stock, 3),
        "pairwise_l2_pairs_per_s": round(pairs_per_s),
        "normalized_l2_generations_per_s": round(norm_per_s, 1),
        "training_images": args.training,
        "flags": {"bf16": args.bf16, "compile": args.compile},
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
