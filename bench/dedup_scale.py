"""Dedup at corpus scale: wall time per step, samples/s, peak RSS and precision/recall on a synthetic
img2dataset-like corpus with known duplicates, for 1 and 2 map workers; and the limit — reading and
decoding every image on all cores, nothing else.

    python bench/dedup_scale.py [--samples 100000] [--settings local:2 local:1 ray:2] [--out bench/dedup_scale.json]

A setting is ``executor:workers[:override...]`` (``ray:2``: a local Ray instance of 2 CPUs; needs
``.[ray]``; ``local:2:dedup.image.local.enabled=false``: Hydra overrides after the workers).

The corpus: 64-px JPEGs (smooth random pictures, each with its own random caption), 10,000 per shard;
3% of the originals get 1–10 copies, each a JPEG re-encode at another quality with its caption's case
changed, placed anywhere in the corpus. Each setting runs ``python -m dedup`` in a fresh process on a cold
cache (its peak RSS is its own) and scores the manifest against the ground truth: a pair is predicted
when both samples share a cluster; precision and recall are over pairs of copies of one original.

``--corpus embeddings [--dim 512]``: instead, a corpus of precomputed vectors and metadata
(bench/embedding_corpus.py: float16 unit vectors, planted copies found by the image signal or by caption
+ image, hard negatives and caption twins; parts of 100,000), run as ``corpus=embeddings`` and scored by
the dedup run's own evaluation against its ground truth.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from embedding_corpus import WORDS as CAPTION_WORDS  # bench/ is this script's folder
from embedding_corpus import write_corpus as write_embedding_corpus
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PER_SHARD = 10_000
WORDS = CAPTION_WORDS[:18]  # this corpus's caption vocabulary, as its recorded figures used


def _picture(rng: np.random.Generator) -> Image.Image:
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((64, 64), Image.Resampling.BICUBIC)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write_shard(args: tuple[Path, int, list[tuple[str, int, int, bool]], int]) -> None:
    """One shard: (key, original id, quality, upper-case caption) per sample, pictures re-drawn from seeds."""
    path, seed, rows, _ = args
    with tarfile.open(path, "w") as tar:
        for key, origin, quality, upper in rows:
            rng = np.random.default_rng([seed, origin])
            caption = " ".join(rng.choice(WORDS, 8))
            for name, data in ((f"{key}.jpg", _jpeg(_picture(rng), quality)), (f"{key}.txt", caption.encode())):
                data = data.upper() if upper and name.endswith(".txt") else data
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))


def build_corpus(folder: Path, n: int, seed: int = 0) -> Path:
    """Shards plus ``truth.json`` (key → original id)."""
    rng = np.random.default_rng(seed)
    originals = int(n / (1 + 0.03 * 5.5))
    copies = rng.integers(1, 11, originals) * (rng.random(originals) < 0.03)
    ids = np.concatenate([np.arange(originals), np.repeat(np.arange(originals), copies)])[:n]
    order = rng.permutation(len(ids))
    ids = ids[order]
    first = np.zeros(len(ids), bool)
    _, first_pos = np.unique(ids, return_index=True)
    first[first_pos] = True
    quality = np.where(first, 90, rng.integers(60, 85, len(ids)))
    upper = ~first & (rng.random(len(ids)) < 0.5)
    rows = [(f"{i:09d}", int(o), int(q), bool(u)) for i, (o, q, u) in enumerate(zip(ids, quality, upper, strict=True))]
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (folder / f"{s:05d}.tar", seed, rows[s * PER_SHARD : (s + 1) * PER_SHARD], s)
        for s in range(-(-len(rows) // PER_SHARD))
    ]
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_write_shard, jobs))
    (folder / "truth.json").write_text(json.dumps({k: o for k, o, _, _ in rows}))
    return folder


def score(manifest: Path, truth: dict[str, int]) -> dict[str, float]:
    rows = pq.read_table(manifest, columns=["key", "cluster_id"]).to_pylist()
    clusters = [r["cluster_id"] for r in rows]
    origins = [truth[r["key"]] for r in rows]

    def pairs(counts: Counter[object]) -> int:
        return sum(c * (c - 1) // 2 for c in counts.values())

    tp = pairs(Counter(zip(clusters, origins, strict=True)))
    predicted, true = pairs(Counter(clusters)), pairs(Counter(origins))
    return {"precision": round(tp / predicted, 4) if predicted else 1.0, "recall": round(tp / true, 4) if true else 1.0}


def _decode_shard(path: str) -> int:
    from memguard.corpus.readers import read_tar
    from memguard.corpus.sample import Sample
    from memguard.corpus.validate import decode_image

    count = 0
    for item in read_tar(path):
        if isinstance(item, Sample):
            decode_image(item.image)
            count += 1
    return count


def read_decode_limit(folder: Path) -> dict[str, float]:
    """Read and decode every image on all cores, nothing else: the ceiling of any one-pass map stage."""
    shards = sorted(str(p) for p in folder.glob("*.tar"))
    start = time.perf_counter()
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        n = sum(pool.map(_decode_shard, shards))
    seconds = time.perf_counter() - start
    return {"samples": n, "seconds": round(seconds, 1), "samples_per_s": round(n / seconds)}


def map_profile(shard: Path, repeats: int = 5) -> dict[str, float]:
    """Where the map stage's time goes, per sample of one shard in one process (best of ``repeats``,
    warm): reading, decoding, the default embedder, the pixel hash, and the whole map of the shard."""
    from memguard.corpus.metadata import CaptionSource
    from memguard.corpus.readers import read_tar
    from memguard.corpus.sample import Sample
    from memguard.corpus.validate import Limits, decode_image
    from memguard.dedup.params import DedupParams
    from memguard.dedup.signals.embed import make_embedder
    from memguard.dedup.signals.pixels import pixel_hash
    from memguard.dedup.stages.map import MapParams, map_part

    defaults = DedupParams()
    params = MapParams(Limits(), CaptionSource(), defaults.minhash, defaults.embedder, defaults.local.features if defaults.local.enabled else None)
    samples = [item for item in read_tar(str(shard)) if isinstance(item, Sample)]
    images = [decode_image(s.image) for s in samples]
    embedder = make_embedder(defaults.embedder)
    batch = defaults.embedder.batch_size

    def best(run: object) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return round(min(times) / len(samples) * 1e6, 1)

    with tempfile.TemporaryDirectory() as tmp:
        steps = {
            "read_us": best(lambda: list(read_tar(str(shard)))),
            "decode_us": best(lambda: [decode_image(s.image) for s in samples]),
            "embed_us": best(lambda: [embedder.embed(images[i : i + batch]) for i in range(0, len(images), batch)]),
            "pixel_hash_us": best(lambda: [pixel_hash(image) for image in images]),
            "map_part_us": best(lambda: map_part("shards", str(shard), params, folder=Path(tmp))),
        }
    steps["read_decode_over_map"] = round((steps["read_us"] + steps["decode_us"]) / steps["map_part_us"], 3)
    return steps


def _status_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of a process (kiB); empty once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "RssAnon", "RssFile")}


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found += [int(c) for c in children]
        frontier += [int(c) for c in children]
    return found


class MemoryPoll:
    """Peak memory of a process and of each of its descendants (pool or Ray workers), polled from /proc
    every ``interval`` s. RSS counts the pages of memory-mapped files too, which the kernel can drop at
    will; RssAnon is what the process really holds — both are kept, and a timeline of the driver's."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval = pid, interval
        self.driver: dict[str, int] = {}
        self.workers: dict[int, dict[str, int]] = {}
        self.timeline: list[tuple[float, int, int]] = []  # (s, driver RssAnon MB, driver RssFile MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryPoll:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.wait(self.interval):
            now = _status_kib(self.pid)
            for key, value in now.items():
                self.driver[key] = max(self.driver.get(key, 0), value)
            if now:
                self.timeline.append((round(time.perf_counter() - start, 2), now.get("RssAnon", 0) >> 10,
                                      now.get("RssFile", 0) >> 10))  # fmt: skip
            for child in _descendants(self.pid):
                peaks = self.workers.setdefault(child, {})
                for key, value in _status_kib(child).items():
                    peaks[key] = max(peaks.get(key, 0), value)

    def report(self) -> dict[str, object]:
        def mb(peaks: dict[str, int], key: str) -> int:
            return round(peaks.get(key, 0) / 1024)

        biggest = max(self.workers.values(), key=lambda p: p.get("VmRSS", 0), default={})
        return {
            "peak_rss_mb": mb(self.driver, "VmRSS"),
            "peak_anon_mb": mb(self.driver, "RssAnon"),
            "peak_file_mb": mb(self.driver, "RssFile"),
            "largest_worker_rss_mb": mb(biggest, "VmRSS"),
            "largest_worker_anon_mb": max((mb(p, "RssAnon") for p in self.workers.values()), default=0),
            "worker_processes": len(self.workers),
        }


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_dedup_cli(folder: Path, setting: str, *, corpus: str = "shards") -> dict[str, object]:
    """``python -m dedup`` on ``folder`` (``corpus``: shards, or embeddings scored by its ground truth)."""
    executor, workers, *overrides = setting.split(":")
    truth = [f"corpus.ground_truth={folder / 'ground_truth.parquet'}"] if corpus == "embeddings" else []
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        args = [f"corpus.path={folder}", f"output={tmp}/out", f"cache_dir={tmp}/cache", f"executor={executor}",
                f"executor.workers={workers}", *truth, *overrides]  # fmt: skip
        start = time.perf_counter()
        with open(Path(tmp) / "stderr.log", "w+") as err:
            proc = subprocess.Popen([sys.executable, "-m", "dedup", f"corpus={corpus}", *args], cwd=tmp,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    env={**os.environ, "WDS_SECURE": "1", "RAY_AUTH_MODE": "disabled"})  # fmt: skip
            with MemoryPoll(proc.pid) as memory:
                returncode = proc.wait()
            wall = time.perf_counter() - start
            if returncode:
                err.seek(0)
                raise SystemExit(err.read()[-3000:])
        stats = json.loads((Path(tmp) / "out" / "stats.json").read_text())
        disk = {kind.name: _size(kind) for kind in sorted((Path(tmp) / "cache").iterdir()) if kind.is_dir()}
        disk["output"] = _size(Path(tmp) / "out")
        if corpus == "embeddings":
            found = stats["evaluation"]["injected"]
            quality = {"precision": found["precision"], "recall": found["recall"]}
        else:
            quality = score(Path(tmp) / "out" / "manifest.parquet", json.loads((folder / "truth.json").read_text()))
    steps = {k: round(float(v["seconds"]), 2) for k, v in stats["steps"].items()}
    return {
        "executor": executor,
        "workers": int(workers),
        "overrides": overrides,
        "wall_s": round(wall, 1),
        "samples_per_s": round(stats["input_units"] / wall),
        **memory.report(),
        "steps_s": steps,
        "steps_peak_rss_mb": {k: v.get("peak_rss_mb") for k, v in stats["steps"].items()},
        "disk_bytes_per_sample": {k: round(v / stats["input_units"]) for k, v in disk.items()},
        **quality,
        "driver_memory_timeline": memory.timeline[:: max(1, len(memory.timeline) // 400)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--settings", nargs="*", default=["local:2", "local:1", "ray:2"])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "memguard-dedup-scale")
    parser.add_argument("--out", type=Path, default=Path("bench/dedup_scale.json"))
    parser.add_argument("--profile", action="store_true", help="also time the map's parts on one shard")
    parser.add_argument("--corpus", choices=("shards", "embeddings"), default="shards",
                        help="embeddings: bench/embedding_corpus.py's synthetic vectors + metadata, no images")  # fmt: skip
    parser.add_argument("--dim", type=int, default=512, help="vector width of an embedding corpus")
    args = parser.parse_args()
    if args.corpus == "embeddings":
        folder = args.work / f"emb{args.samples}d{args.dim}"
        if not (folder / "ground_truth.parquet").exists():
            write_embedding_corpus(folder, args.samples, dim=args.dim, per_part=min(args.samples, 100_000),
                                   workers=len(os.sched_getaffinity(0)))  # fmt: skip
        corpus_info: dict[str, object] = {"corpus": "embeddings", "dim": args.dim, "per_part": min(args.samples, 100_000)}
    else:
        folder = args.work / f"n{args.samples}"
        if not (folder / "truth.json").exists():
            build_corpus(folder, args.samples)
        corpus_info = {"per_shard": PER_SHARD, "read_decode_limit": read_decode_limit(folder)}
    report: dict[str, object] = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
        "samples": args.samples,
        **corpus_info,
        **({"map_profile": map_profile(folder / "00000.tar")} if args.profile else {}),
    }
    print(json.dumps(report), flush=True)
    runs = []
    for setting in args.settings:
        runs.append(run_dedup_cli(folder, setting, corpus=args.corpus))
        print(json.dumps(runs[-1]), flush=True)
    report["runs"] = runs
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
