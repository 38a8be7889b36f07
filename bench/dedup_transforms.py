"""Are copies found after real-world edits? Recall per transform and false merges, per offline embedder,
with imagededup's default method (perceptual hash, Hamming ≤ 10) as the peer.

    python bench/dedup_transforms.py [--emoji 600] [--resolution 64] [--out bench/dedup_transforms.json]

Emoji from the built-in corpus, rendered at ``--resolution``, split in two halves. Each original gets one
copy under each of nine fixed edits (bench/edits.py: JPEG q60, resize to 60%, rotate 7°,
greyscale, colour jitter, a text watermark, a crop to the central 80%, a horizontal flip, a 15% letterbox
pad); the reporting half also gets copies under six held-out edits (other strengths of the same families,
never used to design the ``robust`` embedder). Every sample has its own caption, so only the image
signals can join a copy to its original. For each embedder the image threshold is chosen on the first
half (the lowest with at most one false pair per original) and reported on the second half by running
the real dedup pipeline with that threshold, and with the default; the keeper-assignment margin
(``dedup.image.assign_margin``) is swept on the first half only. A copy is found when it ends in its
original's cluster; a false pair is a pair of samples of different originals in one cluster, unless the
two originals are one natural group of the built-in corpus (skin-tone and gendered variants, drawings
Twemoji repeats or mirrors: memguard/corpus/twemoji.py), as the built-in corpus's evaluation counts them.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
import pyarrow.parquet as pq
from edits import HELD_OUT, TRANSFORMS, edit  # bench/edits.py, beside this script
from PIL import Image

from memguard.common.cache import Cache
from memguard.corpus.sample import Sample
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.twemoji import emoji_files, natural_groups, render
from memguard.corpus.writer import ShardWriter
from memguard.dedup.decide.cluster import ClusterRule
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.dedup.signals.embed import EmbedderParams, make_embedder, view_layout
from memguard.dedup.signals.neighbors import IndexParams
from memguard.dedup.signals.views import similarity_matrix

Half = tuple[list[tuple[str, Image.Image]], dict[str, str], dict[str, str]]  # samples, origin, natural group


def build_half(files: list[Path], resolution: int, seed: int, edits: tuple[str, ...]) -> Half:
    """Samples (key, image), each key's original key, and each original's natural group."""
    rng = np.random.default_rng(seed)
    samples, origin = [], {}
    rendered = [render(path, resolution) for path in files]
    groups = natural_groups([p.stem for p in files], rendered)
    group = {f"o{i:05d}": g for i, g in enumerate(groups)}
    for i, rgb in enumerate(rendered):
        key = f"o{i:05d}"
        samples.append((key, Image.fromarray(rgb)))
        origin[key] = key
        for name in edits:
            copy_key = f"{key}_{name}"
            samples.append((copy_key, edit(rgb, name, rng)))
            origin[copy_key] = key
    return samples, origin, group


def write_shard(samples: list[tuple[str, Image.Image]], folder: Path) -> None:
    with ShardWriter(folder, max_count=len(samples) + 1) as writer:
        for n, (key, image) in enumerate(samples):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            writer.write(Sample(key, f"caption number {n}", buf.getvalue(), "bench", "png"))


def _recall(found: Callable[[str], bool], keys: list[str], names: tuple[str, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in names:
        copies = [k for k in keys if k.endswith("_" + name)]
        out[name] = round(float(np.mean([found(k) for k in copies])), 4) if copies else None
    return out


def _false_pairs(together: np.ndarray, keys: list[str], origin: dict[str, str], group: dict[str, str]) -> int:
    """Pairs (i < j) marked ``together`` whose originals differ and are not one natural group."""
    groups = np.array([group[origin[k]] for k in keys])
    return int((np.triu(together, 1) & (groups[:, None] != groups[None, :])).sum())


def _summary(found: Callable[[str], bool], together: np.ndarray, keys: list[str], half: Half) -> dict[str, object]:
    """Recall per edit (``found``: is this copy joined to its original) and false pairs of ``together``."""
    _, origin, group = half
    recall = _recall(found, keys, TRANSFORMS)
    values = [r for r in recall.values() if r is not None]
    return {
        "recall": recall,
        "held_out_recall": _recall(found, keys, HELD_OUT),
        "mean_recall": round(float(np.mean(values)), 4),
        "min_recall": min(values),
        "false_pairs": _false_pairs(together, keys, origin, group),
    }


def score(labels: dict[str, int], half: Half) -> dict[str, object]:
    """Recall per edit (copy in its original's cluster) and false pairs."""
    origin = half[1]
    keys = list(labels)
    cluster = np.array([labels[k] for k in keys])
    return _summary(lambda k: labels[k] == labels[origin[k]], cluster[:, None] == cluster[None, :], keys, half)


def choose_threshold(kind: str, half: Half) -> float:
    """The lowest threshold (highest recall) on this half with at most one false pair per original,
    counted pairwise without clustering, in steps of 0.005."""
    samples, origin, group = half
    embedder = make_embedder(EmbedderParams(kind=kind))
    vectors = embedder.embed([np.asarray(image.convert("RGB")) for _, image in samples])
    sims = similarity_matrix(vectors, vectors, view_layout(kind))
    keys = [k for k, _ in samples]
    originals = len(set(origin.values()))
    best = 0.995
    for t in np.arange(0.995, 0.499, -0.005):
        if _false_pairs(sims >= t, keys, origin, group) > originals:
            break
        best = float(t)
    return round(best, 3)


def run_half(half: Half, params: DedupParams) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        write_shard(half[0], Path(tmp) / "shards")
        corpus = open_corpus(CorpusSpec(kind="shards", path=str(Path(tmp) / "shards")), Path(tmp) / "cache")
        result = run_dedup(corpus, params, out_dir=Path(tmp) / "out", cache=Cache(Path(tmp) / "cache"))
        rows = pq.read_table(result.manifest, columns=["key", "cluster_id"]).to_pylist()
    return {r["key"]: int(r["cluster_id"]) for r in rows}


ASSIGN_MARGINS = (0.0, 0.005, 0.01, 0.02, 2.0)  # 2.0: any match ties, the first kept in priority wins


def margin_sweep(half: Half) -> dict[str, dict[str, object]]:
    """The default embedder and threshold on the choosing half, for each assignment margin (how a removed
    sample picks its keeper among the kept samples it matches): recall per edit, mean, min, false pairs."""
    out = {}
    for margin in ASSIGN_MARGINS:
        params = DedupParams(rule=ClusterRule(assign_margin=margin), write_shards=False)
        found = score(run_half(half, params), half)
        out[str(margin)] = {k: found[k] for k in ("recall", "mean_recall", "min_recall", "false_pairs")}
    return out


def peer(half: Half) -> dict[str, object]:
    """imagededup's default (PHash, max Hamming distance 10), pairwise, as imagehash computes it."""
    samples, origin, _ = half
    keys = [k for k, _ in samples]
    signs = np.stack([imagehash.phash(image).hash.reshape(-1) for _, image in samples]).astype(np.float32) * 2 - 1
    hamming = (signs.shape[1] - signs @ signs.T) / 2  # ±1 bits: agreements minus disagreements
    near = hamming <= 10
    index = {k: i for i, k in enumerate(keys)}
    return _summary(lambda k: bool(near[index[k], index[origin[k]]]), near, keys, half)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emoji", type=int, default=600, help="originals in all (half to choose, half to report)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/dedup_transforms.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    files = emoji_files()
    picked = [files[i] for i in sorted(rng.choice(len(files), args.emoji, replace=False))]
    choose_files, report_files = picked[: args.emoji // 2], picked[args.emoji // 2 :]
    choose = build_half(choose_files, args.resolution, args.seed, TRANSFORMS)
    report = build_half(report_files, args.resolution, args.seed + 1, TRANSFORMS + HELD_OUT)
    results: dict[str, object] = {}
    for kind in ("robust", "pixels", "phash"):
        threshold = choose_threshold(kind, choose)
        index_floor = min(0.75, threshold)
        params = DedupParams(
            embedder=EmbedderParams(kind=kind),
            index=IndexParams(min_sim=index_floor),
            rule=ClusterRule(image_threshold=threshold, loose_image_threshold=max(0.8, index_floor)),
            write_shards=False,
        )
        default = DedupParams(embedder=EmbedderParams(kind=kind), write_shards=False)
        results[kind] = {
            "chosen_threshold": threshold,
            "chosen": score(run_half(report, params), report),
            f"default_threshold_{ClusterRule().image_threshold}": score(run_half(report, default), report),
        }
    results["peer_phash_hamming10"] = peer(report)
    results["assign_margin_sweep_choosing_half"] = margin_sweep(choose)
    report_json = {
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "originals_per_half": len(report_files),
        "resolution": args.resolution,
        "transforms": list(TRANSFORMS),
        "held_out": list(HELD_OUT),
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.write_text(json.dumps(report_json, indent=2) + "\n")
    print(json.dumps(report_json, indent=2))


if __name__ == "__main__":
    main()
