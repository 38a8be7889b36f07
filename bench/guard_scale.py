"""The copy guard against many training images: latency per generation, memory, and recall of the indexed
search against the exhaustive one.

    python bench/guard_scale.py [--samples 100000] [--queries 400] [--out bench/guard_scale.json]

Training images: 64-px smooth random pictures (bench/dedup_scale.py's), embedded with the default
``robust`` embedder. Queries: half are edited copies of training pictures (bench/edits.py's nine edits in
turn), half fresh pictures. For each query the guard's answer (similarity, nearest training row) comes from
``TrainingIndex`` (faiss: IVF in a 64-d PCA projection per view index, top k rescored exactly) and from the
exhaustive ``best_match``. Recall: of the queries the exhaustive guard calls copies (similarity ≥ 0.975),
the share the indexed guard calls copies too; agreement: the share with the same nearest training row.
Latency: embedding and search of one batch of 16 generations, per generation (the guard as a pipeline runs
it); the search of all queries in one call; the exhaustive search both ways (all at once, and 4 batches of 16).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
from dedup_scale import _picture  # bench/dedup_scale.py, beside this script
from edits import TRANSFORMS, edit  # bench/edits.py, beside this script

from memguard.dedup.signals.embed import EmbedderParams, make_embedder, view_layout
from memguard.dedup.signals.views import best_match
from memguard.extract.guard_index import GuardIndexParams, TrainingIndex

THRESHOLD = 0.975
BATCH = 16


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_vectors(n: int, seed: int, out: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """The embeddings of ``n`` pictures (memory-mapped from ``out``), and the first 10,000 pictures."""
    rng = np.random.default_rng(seed)
    embedder = make_embedder(EmbedderParams())
    kept: list[np.ndarray] = []
    vectors = None
    for start in range(0, n, 4096):
        pictures = [np.asarray(_picture(rng)) for _ in range(min(4096, n - start))]
        block = embedder.embed(pictures)
        if vectors is None:
            vectors = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, block.shape[1]))
        vectors[start : start + len(block)] = block
        if len(kept) < 10_000:
            kept.extend(pictures[: 10_000 - len(kept)])
    assert vectors is not None
    vectors.flush()
    return np.load(out, mmap_mode="r"), kept


def queries(pictures: list[np.ndarray], count: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(query images, the training row each is a copy of or -1): half edited copies, half fresh pictures."""
    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(len(pictures), count // 2, replace=False)
    names = sorted(TRANSFORMS)
    copies = [np.asarray(edit(pictures[r], names[i % len(names)], rng)) for i, r in enumerate(rows)]
    fresh = [np.asarray(_picture(rng)) for _ in range(count - len(rows))]
    return copies + fresh, np.concatenate([rows, np.full(len(fresh), -1)])  # edits change sizes: a list


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/guard_scale"))
    parser.add_argument("--out", type=Path, default=Path("bench/guard_scale.json"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    layout = view_layout("robust")
    embedder = make_embedder(EmbedderParams())

    started = time.perf_counter()
    vectors, pictures = training_vectors(args.samples, args.seed, args.work / "vectors.npy")
    embed_seconds = time.perf_counter() - started
    images, copy_of = queries(pictures, args.queries, args.seed)

    started = time.perf_counter()
    index = TrainingIndex(vectors, layout, GuardIndexParams(exact_below=0))
    build_seconds = time.perf_counter() - started
    rss_after_build = _peak_rss_mb()

    query_vectors = embedder.embed(images)
    started = time.perf_counter()
    sims, rows = index.best(query_vectors)
    search_ms = (time.perf_counter() - started) * 1000 / len(images)  # all queries in one call
    started = time.perf_counter()
    for start in range(0, len(images), BATCH):  # what the guard does per batch of generations
        index.best(embedder.embed(images[start : start + BATCH]))
    guard_ms = (time.perf_counter() - started) * 1000 / len(images)

    started = time.perf_counter()
    exact_sims, exact_rows = best_match(np.ascontiguousarray(query_vectors), vectors, layout)
    exhaustive_ms = (time.perf_counter() - started) * 1000 / len(images)
    started = time.perf_counter()
    for start in range(0, 4 * BATCH, BATCH):  # the exhaustive guard as it runs: a batch of 16 at a time
        best_match(np.ascontiguousarray(query_vectors[start : start + BATCH]), vectors, layout)
    exhaustive_batch_ms = (time.perf_counter() - started) * 1000 / (4 * BATCH)

    flagged = exact_sims >= THRESHOLD
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "training_samples": args.samples,
        "queries": len(images),
        "vector_floats": int(vectors.shape[1]),
        "embed_training_s": round(embed_seconds, 1),
        "index_build_s": round(build_seconds, 1),
        "index_searches": len(index.searches),
        "peak_rss_mb_after_build": round(rss_after_build, 1),
        "search_ms_per_generation_all_queries_at_once": round(search_ms, 2),
        "guard_ms_per_generation_batches_of_16": round(guard_ms, 2),
        "exhaustive_ms_per_generation_all_queries_at_once": round(exhaustive_ms, 2),
        "exhaustive_ms_per_generation_batches_of_16": round(exhaustive_batch_ms, 2),
        "exhaustive_copies": int(flagged.sum()),
        "edited_copies_flagged_exhaustive": int((flagged & (copy_of >= 0)).sum()),
        "fresh_flagged_exhaustive": int((flagged & (copy_of < 0)).sum()),
        "recall_vs_exhaustive": round(float(((sims >= THRESHOLD) & flagged).sum() / max(1, flagged.sum())), 4),
        "same_nearest_row_of_copies": round(float((rows[flagged] == exact_rows[flagged]).mean()), 4),
        "copies_nearest_their_original": round(float((exact_rows[flagged] == copy_of[flagged]).mean()), 4),
        "indexed_above_exhaustive": int((sims > exact_sims + 1e-5).sum()),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
