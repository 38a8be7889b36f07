"""Training throughput: our loop vs a plain diffusers + torch loop, same model, data, batch and precision.

    python bench/train_bench.py [--steps 200] [--batch 64] [--resolution 16] [--channels 32,64,64]
                                [--device cpu|cuda] [--bf16] [--ablate] [--set KEY=VALUE ...] [--out FILE]

Ours runs with its speed switches as the device resolves them (``auto``: all on with CUDA, off on the
CPU) unless ``--set`` fixes one. ``--ablate`` adds one run per switch with that switch flipped (on a GPU:
each optimisation off on its own; on the CPU: each on), so every optimisation's share is measured
separately. With CUDA it also samples GPU utilisation during each run (``nvidia-smi``, over the last two
thirds of the run's wall time: after compilation and warm-up) and counts the host synchronisations of our
loop between two log reads (``torch.cuda.set_sync_debug_mode``): the sync-free path should have none.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from memguard.common.config import build
from memguard.corpus.twemoji import TwemojiConfig, build_twemoji
from memguard.diffusion.images import load_image_set
from memguard.diffusion.models import ModelConfig, build_model
from memguard.train.config import SWITCHES, TrainConfig
from memguard.train.loop import train_model

WARMUP = 10  # untimed steps (both loops)


class Utilisation:
    """GPU utilisation sampled every 100 ms by ``nvidia-smi`` while the block runs (None without a GPU)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Utilisation:
        exe = shutil.which("nvidia-smi")
        if exe and torch.cuda.is_available():
            cmd = [exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append((time.perf_counter(), float(line.split(",")[0])))
            except ValueError:
                continue

    def __exit__(self, *_: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    def mean_after(self, share: float) -> float | None:
        """Mean utilisation (%) over the last ``1 - share`` of the sampled span."""
        if len(self.samples) < 2:
            return None
        start, end = self.samples[0][0], self.samples[-1][0]
        cut = start + share * (end - start)
        late = [u for t, u in self.samples if t >= cut]
        return round(statistics.fmean(late), 1) if late else None


@dataclass
class Timed:
    images_per_s: float
    gpu_util: float | None


def plain_loop(model_cfg: ModelConfig, data, steps: int, batch: int, *, device: str, bf16: bool) -> Timed:  # type: ignore[no-untyped-def]
    """The loop of diffusers' train_unconditional example, reduced to its arithmetic (with its
    ``--mixed_precision`` as autocast, matching ours)."""
    torch.manual_seed(0)
    unet: UNet2DModel = build_model(model_cfg).unet.to(device)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=model_cfg.beta_schedule)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    ema = EMAModel(unet.parameters(), decay=0.999)
    rng = np.random.default_rng(0)
    start = 0.0
    with Utilisation() as util:
        for step in range(steps + WARMUP):
            if step == WARMUP:
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            x0 = torch.from_numpy(data.pixels(rng.integers(0, len(data), batch))).to(device)
            noise = torch.randn_like(x0)
            t = torch.randint(0, 1000, (batch,), device=device)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample.float(), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            ema.step(unet.parameters())
        if device == "cuda":
            torch.cuda.synchronize()
    return Timed(steps * batch / (time.perf_counter() - start), util.mean_after(1 / 3))


def ours(model_cfg: ModelConfig, data, cfg: TrainConfig) -> Timed:  # type: ignore[no-untyped-def]
    model = build_model(model_cfg)
    with tempfile.TemporaryDirectory() as tmp, Utilisation() as util:
        result = train_model(model, data, cfg, out_dir=tmp)
    return Timed(result.images_per_second, util.mean_after(1 / 3))


def host_syncs_per_step(model_cfg: ModelConfig, data, cfg: TrainConfig) -> float | None:  # type: ignore[no-untyped-def]
    """Synchronising CUDA calls per step of our loop with no log read in the way (CUDA only)."""
    if not torch.cuda.is_available():
        return None
    model = build_model(model_cfg)
    quiet = replace(cfg, log_every=10**9)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_model(model, data, quiet, out_dir=tmp)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    # The end of the run (reading the checks, saving the model) syncs a fixed number of times.
    return round(len(syncs) / quiet.steps, 3)


def _resolved(cfg: TrainConfig, device: torch.device) -> dict[str, bool]:
    return {name: cfg.enabled(name, device) for name in SWITCHES}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--channels", default="32,64,64")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in both loops")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a TrainConfig field of ours")
    parser.add_argument("--ablate", action="store_true", help="also one run per speed switch, that switch flipped")
    parser.add_argument("--skip", default="", help="switches not to ablate, comma-separated (compile is slow on a CPU)")
    parser.add_argument("--compile-modes", default="", help="also ours compiled in each of these torch.compile modes")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--cache", default=".cache")
    parser.add_argument("--out", default="bench/train_results.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    corpus = build_twemoji(TwemojiConfig(resolution=args.resolution, subset=1000), Path(args.cache) / "corpus")
    data = load_image_set(str(corpus.train), args.resolution, args.cache)
    model_cfg = ModelConfig(
        kind="unet_uncond", resolution=args.resolution, channels=tuple(int(c) for c in args.channels.split(","))
    )
    overrides = dict(kv.split("=", 1) for kv in args.set)
    base = build(TrainConfig, {
        "steps": args.steps + WARMUP, "batch_size": args.batch, "checkpoint_every": 0, "sample_every": 0,
        "log_every": 50, "log_with": "none", "warmup_steps": 1, "mixed_precision": "bf16" if args.bf16 else "no",
        **{k: _parse(v) for k, v in overrides.items()},
    }, "train")  # fmt: skip
    variants = {"ours": base}
    if args.ablate:
        skip = set(filter(None, args.skip.split(",")))
        for name in SWITCHES:
            flipped = not base.enabled(name, device)
            if name in skip or (name == "pin_memory" and device.type != "cuda"):
                continue
            variant = replace(base, **{name: flipped})
            if name == "fused_adam" and not flipped:  # deferred checks need the fused kernel: both go
                variant = replace(variant, deferred_checks=False)
            if name == "deferred_checks" and flipped:  # and need it to be on
                variant = replace(variant, fused_adam=True)
            variants[f"{name}={'on' if flipped else 'off'}"] = variant
    for mode in filter(None, args.compile_modes.split(",")):  # e.g. reduce-overhead: CUDA graphs
        variants[f"compile_mode={mode}"] = replace(base, compile=True, compile_mode=mode)
    # Alternate the loops and take medians: on a shared machine one timing drifts by ±15% between runs.
    timings: dict[str, list[Timed]] = {"plain": [], **{name: [] for name in variants}}
    for _ in range(args.repeats):
        timings["plain"].append(plain_loop(model_cfg, data, args.steps, args.batch, device=args.device, bf16=args.bf16))
        for name, cfg in variants.items():
            timings[name].append(ours(model_cfg, data, cfg))
    plain = statistics.median(t.images_per_s for t in timings["plain"])
    rows = {}
    for name, runs in timings.items():
        rate = statistics.median(t.images_per_s for t in runs)
        utils = [t.gpu_util for t in runs if t.gpu_util is not None]
        rows[name] = {
            "images_per_s": round(rate, 1),
            "vs_plain": round(rate / plain, 3),
            "rounds": [round(t.images_per_s, 1) for t in runs],
            "gpu_util_percent": round(statistics.median(utils), 1) if utils else None,
            **({"switches": _resolved(variants[name], device)} if name in variants else {}),
        }
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "model": f"UNet2DModel {args.channels} at {args.resolution}px",
        "batch": args.batch,
        "timed_steps": args.steps,
        "precision": "bf16 autocast (both loops)" if args.bf16 else "fp32 (both loops)",
        "speedup": rows["ours"]["vs_plain"],
        "runs": rows,
        "host_syncs_per_step": host_syncs_per_step(model_cfg, data, base),
        "config": {k: v for k, v in asdict(base).items() if k in overrides or k in SWITCHES or k == "compile_mode"},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def _parse(value: str) -> object:
    """A --set value as Hydra would read it: a number or bool where it is one, else the string."""
    try:
        return json.loads(value)
    except ValueError:
        return value


if __name__ == "__main__":
    main()
