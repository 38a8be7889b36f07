"""Are copies of real photographs found after the edits reposts carry? Recall per edit family, originals
falsely merged and wall time of the real dedup pipeline, beside PHash at the same false-pair budget.

    python bench/dedup_photos.py [--out bench/dedup_photos.json] [--config default|global] [--seed 0]

Photographs that ship offline in packages (sources and licences in ``SOURCES``): Debian's
lomiri-wallpapers, lomiri-wallpapers-16.04 and -20.04 (fetched with ``apt-get download`` into
``--photos``; each file's author and CC-BY / CC-BY-SA licence are in the package's copyright file, copied
beside them), scikit-learn's two sample photographs (CC-BY 2.0) and scikit-image's photographs (public
domain or CC0, as each ``skimage.data`` function's docstring says; ``pip install -e .[bench]``). Each
photograph gives one original whole (long side 256 px) and up to ``--tiles`` 256-px tiles cut from it at
512 px on the short side, so that many originals share light, colour and texture: the hard negatives a
curator's corpus is full of. Photographs are split in two halves (tiles stay with their photograph); each
original gets one copy per family of bench/photo_edits.py with a random strength. Every sample has its own
random caption, so only the image signals can join a copy to its original.

A copy is found when the dedup run puts it in its original's cluster; an original is falsely merged when
its cluster holds another original. ``--config global`` is the image signal without its second stage,
local features with geometric verification (memguard/dedup/signals/local.py), to compare in the same run. The peer is PHash
(imagededup's default hash; its CNN needs torchvision, which the install must not pull in) at the largest
Hamming radius whose false pairs on the choosing half, counted pairwise, are at most the dedup run's on
that half; reported pairwise (generous to the peer: no clustering, no chaining) on the reporting half.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from dedup_transforms import run_half  # bench/dedup_transforms.py, beside this script
from photo_edits import FAMILIES, apply_edit
from PIL import Image

from memguard.dedup.params import DedupParams
from memguard.dedup.signals.embed import EmbedderParams, make_embedder, view_layout
from memguard.dedup.signals.local import Verifier
from memguard.dedup.signals.local_features import local_features
from memguard.dedup.signals.local_params import LocalParams
from memguard.dedup.signals.views import similarity_matrix

DEBIAN_PACKAGES = ("lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04")
# Wallpapers in those packages that are drawings or designed gradients, not photographs.
NOT_PHOTOS = ("warty-final-ubuntu", "analogpattern", "Painting-Colors", "lomiri-default-background")
SKIMAGE_PHOTOS = {  # name: licence, from its skimage.data docstring
    "astronaut": "public domain (NASA)", "chelsea": "CC0 (Stefan van der Walt)", "coffee": "CC0 (Rachel Michetti)",
    "rocket": "public domain (SpaceX)", "camera": "CC0 (Lav Varshney)", "brick": "CC0 (CC0Textures)",
    "grass": "CC0 (linolafett)", "gravel": "CC0 (CC0Textures)", "coins": "no known copyright (Brooklyn Museum)",
    "hubble_deep_field": "public domain (NASA)", "retina": "CC0 (M. Häggström)",
}  # fmt: skip
SOURCES = {
    "debian": {p: "CC-BY-4.0 / CC-BY-SA-3.0/4.0 per file: /usr/share/doc/<package>/copyright" for p in DEBIAN_PACKAGES},
    "pypi:scikit-learn": {"china.jpg": "CC-BY-2.0 (danielbuechele)", "flower.jpg": "CC-BY-2.0 (vultilion)"},
    "pypi:scikit-image": SKIMAGE_PHOTOS,
}
SIDE = 256


def debian_photos(folder: Path) -> list[Path]:
    """The wallpapers of ``DEBIAN_PACKAGES``, downloaded and unpacked into ``folder`` once."""
    unpacked = folder / "unpacked"
    if not unpacked.exists():
        work = folder / "download"
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", *DEBIAN_PACKAGES], cwd=work, check=True, capture_output=True)
        staging = folder / "staging"
        for deb in sorted(work.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
        staging.rename(unpacked)
    files = sorted((unpacked / "usr/share/backgrounds").rglob("*"))
    return [f for f in files if f.suffix.lower() in (".jpg", ".png") and not any(s in f.name for s in NOT_PHOTOS)]


def package_photos() -> list[tuple[str, Image.Image]]:
    """scikit-learn's and scikit-image's photographs, RGB."""
    import skimage.data
    import sklearn

    out = [(n, Image.open(Path(sklearn.__file__).parent / "datasets/images" / n).convert("RGB"))
           for n in ("china.jpg", "flower.jpg")]  # fmt: skip
    for name in SKIMAGE_PHOTOS:
        array = getattr(skimage.data, name)()
        out.append((name, Image.fromarray(array).convert("RGB")))
    return out


def originals_of(photo: Image.Image, tiles: int, rng: np.random.Generator) -> list[Image.Image]:
    """The whole photograph at long side ``SIDE``, then up to ``tiles`` tiles of ``SIDE`` px cut from it
    at twice that on the short side."""
    w, h = photo.size
    scale = SIDE / max(w, h)
    whole = photo.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    big_scale = 2 * SIDE / min(w, h)
    if big_scale > 1.0:  # too small to tile without upsampling
        return [whole]
    big = photo.resize((round(w * big_scale), round(h * big_scale)), Image.Resampling.LANCZOS)
    cells = [(x, y) for x in range(0, big.width - SIDE + 1, SIDE) for y in range(0, big.height - SIDE + 1, SIDE)]
    picked = rng.permutation(len(cells))[:tiles]
    return [whole] + [big.crop((cells[i][0], cells[i][1], cells[i][0] + SIDE, cells[i][1] + SIDE)) for i in picked]


@dataclass
class Half:
    samples: list[tuple[str, Image.Image]] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)  # every key → its original's key
    family: dict[str, str] = field(default_factory=dict)  # copy key → edit family
    edit: dict[str, str] = field(default_factory=dict)  # copy key → the edit applied (chains name theirs)


def build_half(photos: list[tuple[str, Image.Image]], tiles: int, seed: int) -> Half:
    rng = np.random.default_rng(seed)
    half = Half()
    for name, photo in photos:
        for t, original in enumerate(originals_of(photo, tiles, rng)):
            key = f"{Path(name).stem[:24]}_{t}"
            half.samples.append((key, original))
            half.origin[key] = key
            for fam in FAMILIES:
                copy, how = apply_edit(original, fam, rng)
                half.samples.append((f"{key}__{fam}", copy))
                half.origin[f"{key}__{fam}"], half.family[f"{key}__{fam}"], half.edit[f"{key}__{fam}"] = key, fam, how
    return half


def score(labels: dict[str, int], half: Half) -> dict[str, object]:
    """Recall per family and overall, originals merged with another original, false pairs."""
    found = {k: labels[k] == labels[half.origin[k]] for k in half.family}
    recall = {fam: round(float(np.mean([found[k] for k in found if half.family[k] == fam])), 4) for fam in FAMILIES}
    originals = [k for k in half.origin if half.origin[k] == k]
    by_cluster: dict[int, set[str]] = {}
    for key, cluster in labels.items():
        by_cluster.setdefault(cluster, set()).add(half.origin[key])
    merged = sum(len(by_cluster[labels[o]]) > 1 for o in originals)
    per_origin = Counter((cluster, half.origin[key]) for key, cluster in labels.items())
    per_cluster = Counter(labels.values())
    same = sum(c * (c - 1) // 2 for c in per_origin.values())
    false_pairs = sum(c * (c - 1) // 2 for c in per_cluster.values()) - same
    missed = sorted(half.edit[k] for k in found if not found[k])
    return {
        "recall": recall,
        "overall_recall": round(float(np.mean(list(found.values()))), 4),
        "min_family_recall": min(recall.values()),
        "originals": len(originals),
        "originals_merged": merged,
        "originals_merged_share": round(merged / len(originals), 4),
        "false_pairs": int(false_pairs),
        "missed_edits_sample": missed[:40],
    }


def _phash_hamming(half: Half) -> np.ndarray:
    bits = np.stack([imagehash.phash(image).hash.reshape(-1) for _, image in half.samples]).astype(np.float32) * 2 - 1
    return (bits.shape[1] - bits @ bits.T) / 2


def _pairwise_false(near: np.ndarray, half: Half) -> int:
    origins = np.array([half.origin[k] for k, _ in half.samples])
    return int((np.triu(near, 1) & (origins[:, None] != origins[None, :])).sum())


def peer(choose: Half, report: Half, budget: int) -> dict[str, object]:
    """PHash at the largest Hamming radius with at most ``budget`` false pairs on ``choose``."""
    hamming = _phash_hamming(choose)
    radius = -1
    for r in range(0, 33):
        if _pairwise_false(hamming <= r, choose) > budget:
            break
        radius = r
    near = _phash_hamming(report) <= radius
    index = {k: i for i, (k, _) in enumerate(report.samples)}
    found = {k: bool(near[index[k], index[report.origin[k]]]) for k in report.family}
    recall = {f: round(float(np.mean([found[k] for k in found if report.family[k] == f])), 4) for f in FAMILIES}
    return {"radius": radius, "recall": recall, "overall_recall": round(float(np.mean(list(found.values()))), 4),
            "false_pairs": _pairwise_false(near, report)}  # fmt: skip


def copy_similarities(half: Half) -> dict[str, dict[str, float]]:
    """The default embedder's similarity of each copy to its original, and of each original to its most
    similar other original (what a threshold must stay above), as percentiles: where the global signal
    stands on photographs."""
    embedder = make_embedder(EmbedderParams())
    keys = [k for k, _ in half.samples]
    vectors = embedder.embed([np.asarray(image) for _, image in half.samples])
    sims = similarity_matrix(vectors, vectors, view_layout("robust"))
    index = {k: i for i, k in enumerate(keys)}
    out = {}
    for fam in FAMILIES:
        values = [sims[index[k], index[half.origin[k]]] for k in half.family if half.family[k] == fam]
        out[fam] = {f"p{q}": round(float(np.percentile(values, q)), 4) for q in (10, 50)}
    originals = [index[k] for k in keys if half.origin[k] == k]
    between = sims[np.ix_(originals, originals)]
    np.fill_diagonal(between, -1)
    out["nearest_other_original"] = {f"p{q}": round(float(np.percentile(between.max(1), q)), 4) for q in (50, 90, 99)}
    return out


def local_cost(half: Half, pairs: int = 2000) -> dict[str, float]:
    """What verification costs here, one process: features per image (the map's share) and one
    verification per pair (random pairs of the half, the first ``pairs`` copy-to-original ones included)."""
    params = LocalParams(enabled=True)
    images = [np.asarray(image) for _, image in half.samples]
    started = time.perf_counter()
    features = local_features(images, params.features)
    per_image = (time.perf_counter() - started) / len(images)
    index = {k: i for i, (k, _) in enumerate(half.samples)}
    copies = [(index[k], index[half.origin[k]]) for k in half.family][: pairs // 2]
    rng = np.random.default_rng(0)
    random_pairs = [tuple(rng.choice(len(images), 2, replace=False)) for _ in range(pairs - len(copies))]
    left, right = (np.array(side) for side in zip(*(copies + random_pairs), strict=True))
    verifier = Verifier(features, params)
    verifier.keypoint_counts()
    started = time.perf_counter()
    verifier.combined(np.zeros(len(left), np.float32), left, right)
    per_pair = (time.perf_counter() - started) / len(left)
    return {"features_us_per_image": round(per_image * 1e6), "verify_us_per_pair": round(per_pair * 1e6),
            "feature_bytes_per_sample": params.features.row_bytes}  # fmt: skip


def configs() -> dict[str, DedupParams]:
    """The default (with local-feature verification), and the global descriptor alone
    (``dedup.image.local.enabled=false``, the path before verification)."""
    return {
        "default": DedupParams(write_shards=False),
        "global": DedupParams(write_shards=False, local=LocalParams(enabled=False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=Path, default=Path(".cache/bench_photos"), help="Debian packages' folder")
    parser.add_argument("--tiles", type=int, default=6, help="tiles per photograph, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", action="append", help="configs to run (default: all)")
    parser.add_argument("--out", type=Path, default=Path("bench/dedup_photos.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    photos = [(p.name, Image.open(p).convert("RGB")) for p in debian_photos(args.photos)] + package_photos()
    order = rng.permutation(len(photos))
    choose = build_half([photos[i] for i in order[::2]], args.tiles, args.seed)
    report = build_half([photos[i] for i in order[1::2]], args.tiles, args.seed + 1)
    results: dict[str, object] = {}
    for name, params in configs().items():
        if args.config and name not in args.config:
            continue
        started = time.perf_counter()
        chosen = score(run_half((report.samples, {}, {}), params), report)
        chosen["seconds"] = round(time.perf_counter() - started, 1)
        chosen["choosing_half_false_pairs"] = score(run_half((choose.samples, {}, {}), params), choose)["false_pairs"]
        results[name] = chosen
    first = next(iter(results.values()))
    budget = int(first["choosing_half_false_pairs"])  # type: ignore[call-overload]
    results["peer_phash"] = peer(choose, report, budget)
    out = {
        "machine": f"{platform.machine()}, {platform.python_version()}, {shutil.which('apt-get') and 'debian'}",
        "date": time.strftime("%Y-%m-%d"),
        "sources": SOURCES,
        "photographs": {"choosing": len(order[::2]), "reporting": len(order[1::2])},
        "samples": {"choosing": len(choose.samples), "reporting": len(report.samples)},
        "families": list(FAMILIES),
        "copy_similarity_reporting_half": copy_similarities(report),
        "local_cost_reporting_half": local_cost(report),
        "results": results,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "sources"}, indent=2))


if __name__ == "__main__":
    main()
