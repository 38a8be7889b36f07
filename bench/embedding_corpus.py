"""A synthetic embedding corpus in the clip-retrieval / img2dataset layout, with planted duplicates:

    <root>/img_emb/img_emb_<n>.npy   float16 (rows, dim), unit rows
    <root>/metadata/metadata_<n>.parquet   key, url, caption, width, height
    <root>/ground_truth.parquet   key, origin, natural_group (for scoring only; dedup never reads it)

Vectors resemble a real image-embedding space in the one way that matters to a threshold: unrelated
images are not orthogonal (a shared direction gives them a cosine of ~0.2, as CLIP's do). Each part is
generated from its own seeds, so parts are built in parallel and a corpus of 10^7 never sits in memory.

Planted, per part (rates of all rows):
- ``image`` copies (2%): cosine 0.982–0.999 with their original (a re-encode or resize), an unrelated caption;
- ``caption`` copies (1%): cosine 0.85–0.96 (a recrop), the original's caption with its case and
  punctuation changed — found only by the caption + image clause;
- hard negatives (2%): cosine 0.88–0.95 with another row and their own caption — never duplicates;
- caption twins (1%): another row's caption, an unrelated vector — never duplicates.
An original lies in the same part or the one before, so duplicates cross parts. The ground truth pairs
every copy with its original (``origin``); everything else is its own origin.

    python bench/embedding_corpus.py --samples 1000000 --root /tmp/emb [--dim 512] [--per-part 100000]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = [
    "red",
    "blue",
    "green",
    "small",
    "large",
    "old",
    "new",
    "city",
    "river",
    "mountain",
    "portrait",
    "street",
    "dog",
    "cat",
    "house",
    "tree",
    "car",
    "sky",
    "woman",
    "man",
    "child",
    "beach",
    "forest",
    "night",
    "snow",
    "garden",
    "bridge",
    "boat",
    "train",
    "market",
    "kitchen",
    "flower",
    "bird",
    "lake",
    "road",
]
SHARED = 0.5  # weight of the shared direction: unrelated cosines ≈ SHARED² / (1 + SHARED²) = 0.2
RATES = {"image": 0.02, "caption": 0.01, "negative": 0.02, "twin": 0.01}


@dataclass(frozen=True)
class Plan:
    """One part's rows: the kind of each (0 plain, 1 image copy, 2 caption copy, 3 negative, 4 twin) and,
    for the others, the (part, row) it derives from."""

    kind: np.ndarray
    source_part: np.ndarray
    source_row: np.ndarray


def _rng(seed: int, part: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, part + 1, stream])  # part -1: the corpus-wide stream


def _plan(part: int, rows: int, seed: int) -> Plan:
    rng = _rng(seed, part, 0)
    u = rng.random(rows)
    edges = np.cumsum(list(RATES.values()))
    kind = np.searchsorted(edges, u, side="right") + 1
    kind[u >= edges[-1]] = 0
    source_part = np.where(rng.random(rows) < 0.5, max(part - 1, 0), part)
    source_row = rng.integers(0, rows, rows)
    return Plan(kind.astype(np.int8), source_part.astype(np.int64), source_row.astype(np.int64))


def _base(part: int, rows: int, dim: int, seed: int) -> np.ndarray:
    """The part's plain vectors (every row's, before copies replace some): float32 unit rows."""
    shared = _rng(seed, -1, 0).standard_normal(dim)
    shared /= np.linalg.norm(shared)
    g = _rng(seed, part, 1).standard_normal((rows, dim)).astype(np.float32) / np.sqrt(dim)
    v = g + SHARED * shared.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _captions(part: int, rows: int, seed: int) -> list[str]:
    rng = _rng(seed, part, 2)
    lengths = rng.integers(6, 11, rows)
    words = rng.integers(0, len(WORDS), (rows, 10))
    return [" ".join(WORDS[w] for w in words[r, : lengths[r]]) for r in range(rows)]


def _toward(origin: np.ndarray, cosine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at ``cosine`` to each unit row of ``origin``."""
    noise = rng.standard_normal(origin.shape).astype(np.float32)
    noise -= (noise * origin).sum(1, keepdims=True) * origin
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    c = cosine[:, None].astype(np.float32)
    return c * origin + np.sqrt(1 - c * c) * noise


def _resolved_source(plan: Plan, plans: dict[int, Plan], r: int) -> tuple[int, int]:
    """A row's source, moved off rows that are themselves derived (a copy of a copy is a copy of its original)."""
    part, row = int(plan.source_part[r]), int(plan.source_row[r])
    while plans[part].kind[row] != 0:
        row = (row + 1) % len(plans[part].kind)
    return part, row


def key_of(part: int, row: int) -> str:
    return f"{part:05d}{row:06d}"


def write_part(root: Path, part: int, *, rows: int, dim: int, seed: int) -> None:
    plans = {p: _plan(p, rows, seed) for p in {max(part - 1, 0), part}}
    plan = plans[part]
    vectors = _base(part, rows, dim, seed)
    captions = _captions(part, rows, seed)
    bases = {
        p: (
            _base(p, rows, dim, seed) if p != part else vectors.copy(),
            _captions(p, rows, seed) if p != part else list(captions),
        )
        for p in plans
    }
    rng = _rng(seed, part, 3)
    origin = [key_of(part, r) for r in range(rows)]
    derived = np.flatnonzero(plan.kind != 0)
    sources = [_resolved_source(plan, plans, int(r)) for r in derived]
    lo_hi = {1: (0.982, 0.999), 2: (0.85, 0.96), 3: (0.88, 0.95)}
    for r, (sp, sr) in zip(derived, sources, strict=True):
        kind = int(plan.kind[r])
        base_vec, base_cap = bases[sp][0][sr], bases[sp][1][sr]
        if kind in lo_hi:
            vectors[r] = _toward(base_vec[None], np.array([rng.uniform(*lo_hi[kind])]), rng)[0]
        if kind in (1, 2):
            origin[r] = key_of(sp, sr)
        if kind == 2:
            captions[r] = base_cap.upper() + "!" if rng.random() < 0.5 else base_cap.title() + "."
        if kind == 4:
            captions[r] = base_cap
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    keys = [key_of(part, r) for r in range(rows)]
    np.save(root / "img_emb" / f"img_emb_{part}.npy", vectors.astype(np.float16), allow_pickle=False)
    table = pa.table(
        {
            "key": keys,
            "url": [f"https://images.invalid/{k}.jpg" for k in keys],
            "caption": captions,
            "width": np.full(rows, 512, np.int64),
            "height": np.full(rows, 384, np.int64),
        }
    )
    pq.write_table(table, root / "metadata" / f"metadata_{part}.parquet")
    truth = pa.table({"key": keys, "origin": origin, "natural_group": origin})
    pq.write_table(truth, root / "truth" / f"truth_{part}.parquet")


def write_corpus(root: Path, samples: int, *, dim: int = 512, per_part: int = 100_000, seed: int = 0,
                 workers: int = 1) -> Path:  # fmt: skip
    """Write the corpus under ``root`` (parts of ``per_part`` rows; the last may be shorter) and its
    ground truth as ``root/ground_truth.parquet``; returns that path."""
    (root / "truth").mkdir(parents=True, exist_ok=True)
    parts = -(-samples // per_part)
    if samples % per_part:
        raise ValueError("samples must be a multiple of per_part (every part plans the same row count)")
    jobs = list(range(parts))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_one, [(root, p, per_part, dim, seed) for p in jobs]))
    else:
        for p in jobs:
            write_part(root, p, rows=per_part, dim=dim, seed=seed)
    truth = pa.concat_tables([pq.read_table(root / "truth" / f"truth_{p}.parquet") for p in jobs])
    pq.write_table(truth, root / "ground_truth.parquet")
    return root / "ground_truth.parquet"


def _write_one(job: tuple[Path, int, int, int, int]) -> None:
    root, part, rows, dim, seed = job
    write_part(root, part, rows=rows, dim=dim, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-part", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(write_corpus(args.root, args.samples, dim=args.dim, per_part=args.per_part, seed=args.seed,
                       workers=args.workers))  # fmt: skip


if __name__ == "__main__":
    main()
