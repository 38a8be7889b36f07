"""Our training loop from two source trees (old and new code), alternating in fresh processes: is the new
loop slower? Images/s and process CPU-seconds per run, medians per tree.

    git worktree add /tmp/old <commit>
    python bench/train_loop_ab.py --trees /tmp/old . [--rounds 4] [--steps 160] [--out FILE]

The trees must share the corpus cache (``--cache``); each run imports memguard from its tree
(``PYTHONPATH``), builds the same `UNet2DModel` (32, 64, 64) at 16 px and trains ``--steps`` steps of 64
with the CPU profile's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ONE_RUN = """
import json, sys, tempfile, time
from pathlib import Path
from memguard.corpus.twemoji import TwemojiConfig, build_twemoji
from memguard.diffusion.images import load_image_set
from memguard.diffusion.models import ModelConfig, build_model
from memguard.train.config import TrainConfig
from memguard.train.loop import train_model
cache, steps = sys.argv[1], int(sys.argv[2])
corpus = build_twemoji(TwemojiConfig(resolution=16, subset=1000), Path(cache) / "corpus")
data = load_image_set(str(corpus.train), 16, cache)
cfg = TrainConfig(steps=steps, batch_size=64, checkpoint_every=0, sample_every=0, log_every=10**9, warmup_steps=1)
model = build_model(ModelConfig(kind="unet_uncond", resolution=16, channels=(32, 64, 64)))
with tempfile.TemporaryDirectory() as tmp:
    start = time.process_time()
    result = train_model(model, data, cfg, out_dir=tmp)
    cpu_s = round(time.process_time() - start, 1)
"""
PRINT_SOURCE = """
import memguard.train.loop
print(memguard.train.loop.__file__)
print(json.dumps({"images_per_s": result.images_per_second, "cpu_s": cpu_s}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trees", nargs=2, required=True, metavar=("OLD", "NEW"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--cache", default=".cache")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {tree: [] for tree in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            root = str(Path(tree).resolve())
            # Run from the tree itself: ``python -c`` puts the working directory first on sys.path.
            done = subprocess.run([sys.executable, "-c", ONE_RUN + PRINT_SOURCE, str(Path(args.cache).resolve()),
                                   str(args.steps)], env={**os.environ, "PYTHONPATH": root}, cwd=root,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            *_, source, line = done.stdout.strip().splitlines()
            assert source.startswith(root), f"{tree}: imported {source}"
            runs[tree].append(json.loads(line))
            print(tree, runs[tree][-1], flush=True)
    report = {
        tree: {
            "images_per_s_median": statistics.median(r["images_per_s"] for r in rs),
            "cpu_s_median": statistics.median(r["cpu_s"] for r in rs),
            "runs": rs,
        }
        for tree, rs in runs.items()
    }
    old, new = (report[t] for t in args.trees)
    report["new_vs_old_images_per_s"] = round(new["images_per_s_median"] / old["images_per_s_median"], 3)
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
