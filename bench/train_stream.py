"""Streaming vs memmap training data: time to the first batch, loader and training images/s, peak RSS.

    python bench/train_stream.py [--samples 100000 10000] [--steps 40] [--out bench/train_stream.json]

Builds synthetic img2dataset-like shards (64-px JPEGs, 10,000 per shard, at least four) once per size, then runs each
setting in a fresh process (so that its peak RSS and its start-up are its own): ``memmap`` on a cold
image cache (the decode pass is part of its start-up), ``stream`` with 0 and 2 DataLoader workers. Each
run times its first optimizer step from nothing (open the data, build a small 64-px UNet, one step of 16
images), reads 100 batches of 64 (loader only), then trains ``--steps`` steps of 16 images; peak RSS is
read after each phase (the training's own activations dominate the last one).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PER_SHARD = 10_000


def build_shards(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` samples, 10,000 per shard (at least four shards: two workers need a shard each)."""
    from memguard.corpus.sample import Sample
    from memguard.corpus.writer import ShardWriter

    rng = np.random.default_rng(seed)
    with ShardWriter(folder, max_count=min(PER_SHARD, max(1, n // 4))) as writer:
        for i in range(n):
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((64, 64), Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=90)
            writer.write(Sample(f"{i:08d}", f"synthetic image {i % 997} {i % 13}", buf.getvalue(), "bench", "jpg"))


def _rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def child(args: argparse.Namespace) -> None:
    import torch

    from memguard.diffusion.models import ModelConfig, build_model
    from memguard.train.config import TrainConfig
    from memguard.train.loop import train_model
    from memguard.train.source import open_training_data

    torch.set_num_threads(2)
    started = time.perf_counter()

    def config(steps: int, batch: int) -> TrainConfig:
        return TrainConfig(
            steps=steps,
            batch_size=batch,
            warmup_steps=1,
            checkpoint_every=0,
            sample_every=0,
            log_with="none",
            data=args.mode,
            loader_workers=args.workers,
        )

    def model() -> object:
        return build_model(ModelConfig(kind="unet_uncond", resolution=64, channels=(32, 64, 64)))

    # Time to the first optimizer step, from nothing: open the data (the memmap decodes the corpus here),
    # build the model, train one step of 16 images.
    data, _ = open_training_data(str(args.shards), resolution=64, cfg=config(1, 16), cache_dir=args.cache)
    with tempfile.TemporaryDirectory() as out:
        train_model(model(), data, config(1, 16), out_dir=out)  # type: ignore[arg-type]
    first_step = time.perf_counter() - started
    rss_first_step = _rss_mb()
    batches = data.batches(0, 64, rank=0, world=1)
    next(batches)
    t0 = time.perf_counter()
    for _ in itertools.islice(batches, 100):
        pass
    loader_rate = 100 * 64 / (time.perf_counter() - t0)
    del batches
    rss_loader = _rss_mb()
    with tempfile.TemporaryDirectory() as out:
        result = train_model(model(), data, config(args.steps, 16), out_dir=out)  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "first_step_s": round(first_step, 2),
                "peak_rss_mb_at_first_step": rss_first_step,
                "loader_images_per_s": round(loader_rate),
                "peak_rss_mb_after_loader": rss_loader,
                "train_images_per_s": round(result.images_per_second, 1),
                "peak_rss_mb_training": _rss_mb(),
                "largest_worker_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, nargs="*", default=[100_000, 10_000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "memguard-train-stream")
    parser.add_argument("--out", type=Path, default=Path("bench/train_stream.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    for n in args.samples:
        shards = args.work / f"n{n}"
        if not (shards / "done").exists():
            start = time.perf_counter()
            build_shards(shards, n)
            (shards / "done").write_text(f"{time.perf_counter() - start:.1f}")
        for mode, workers in (("memmap", 0), ("stream", 0), ("stream", 2)):
            with tempfile.TemporaryDirectory() as cache:  # cold: the memmap's decode pass is part of its start
                cmd = [sys.executable, __file__, "--child", "--mode", mode, "--workers", str(workers)]
                cmd += ["--shards", str(shards), "--cache", cache, "--steps", str(args.steps)]
                proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            row = {"samples": n, "data": mode, "workers": workers, **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
        "per_shard": PER_SHARD,
        "resolution": 64,
        "batch_size": 64,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
