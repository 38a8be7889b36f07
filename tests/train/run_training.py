"""Subprocess used by the kill/resume test: trains a tiny model, logging each batch's sample indices.

``--die-in-save N`` kills the process with SIGKILL inside the N-th checkpoint save, after the tensor file
is written and before the checkpoint is marked complete (fault injection for the test only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch

import memguard.train.checkpoint as checkpoint
from memguard.corpus.discover import expand_urls
from memguard.diffusion.images import load_image_set
from memguard.diffusion.models import ModelConfig, build_model
from memguard.train.config import TrainConfig
from memguard.train.data import EpochSampler
from memguard.train.loop import train_model
from memguard.train.stream import StreamData, StreamOptions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--die-in-save", type=int, default=0)
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--stream", type=int, default=-1, help="stream from the shards with this many workers")
    parser.add_argument("--format", default="memguard", help="train.checkpoint_format")
    parser.add_argument("--device-path", action="store_true", help="fused AdamW, device_rng and deferred_checks on")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    order_log = open(out.parent / f"{out.name}.order.jsonl", "a")  # noqa: SIM115

    original_batch = EpochSampler.batch

    def logged(self: EpochSampler, number: int, batch_size: int):  # type: ignore[no-untyped-def]
        index = original_batch(self, number, batch_size)
        order_log.write(json.dumps([number, index.tolist()]) + "\n")
        order_log.flush()
        return index

    EpochSampler.batch = logged  # type: ignore[method-assign]
    if args.die_in_save:
        saves = {"n": 0}
        original_save = checkpoint.save_file

        def dying_save(tensors, filename):  # type: ignore[no-untyped-def]
            original_save(tensors, filename)
            saves["n"] += 1
            if saves["n"] == args.die_in_save:
                os.kill(os.getpid(), signal.SIGKILL)

        checkpoint.save_file = dying_save
    data = (
        load_image_set(args.shards, 16, args.cache)
        if args.stream < 0
        else StreamData(
            expand_urls(args.shards),
            resolution=16,
            seed=0,
            options=StreamOptions(shuffle_buffer=32, workers=args.stream),
        )
    )
    model = build_model(ModelConfig(kind="unet_uncond", resolution=16, channels=(16, 32)))
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=8,
        lr=1e-3,
        warmup_steps=4,
        checkpoint_every=4,
        keep_checkpoints=args.keep,
        checkpoint_format=args.format,
        log_every=4,
        **({"fused_adam": "on", "device_rng": "on", "deferred_checks": "on"} if args.device_path else {}),
    )
    train_model(model, data, cfg, out_dir=out)


if __name__ == "__main__":
    main()
