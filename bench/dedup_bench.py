"""Dedup throughput, in one run on one machine: caption signatures, LSH candidates, kNN.

    python bench/dedup_bench.py [--captions 100000] [--embeddings 100000] [--out bench/dedup_results.json]

Slow baselines (datasketch per-token update, MinHashLSH) run on a subset and are reported as a rate.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

from memguard.dedup.signals.lsh import LshParams, bands_rows, candidate_pairs
from memguard.dedup.signals.minhash import MinHasher, MinHashParams, shingle_hash32
from memguard.dedup.signals.neighbors import IndexParams, build_index
from memguard.dedup.signals.normalize import shingles


def synthetic_captions(n: int, seed: int = 0) -> list[str]:
    """LAION-like: Zipfian vocabulary, 4–20 words, 10% near-duplicates (one word changed or added)."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks
    p /= p.sum()
    lengths = rng.integers(4, 21, n)
    words = rng.choice(vocab, size=int(lengths.sum()), p=p)
    out, pos = [], 0
    for length in lengths:
        out.append(" ".join(words[pos : pos + length]))
        pos += length
    for i in rng.choice(n, n // 10, replace=False):
        out[i] = out[(i + 1) % n] + " extra"
    return out


def clustered_embeddings(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 100, dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def rate(n: int, fn: Callable[[], object]) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return n / seconds, seconds


def bench_signatures(captions: list[str], ngram: int, num_perm: int) -> dict[str, float]:
    results: dict[str, float] = {}
    hasher = MinHasher(MinHashParams(num_perm=num_perm, ngram=ngram))
    hasher.signatures(captions[:1000])  # warm the power tables once, as a long run would
    results["ours"], _ = rate(len(captions), lambda: hasher.signatures(captions))
    sub = captions[:5000]
    shingled = [[s.encode() for s in shingles(c, ngram)] for c in sub]

    def per_token() -> None:
        for tokens in shingled:
            m = MinHash(num_perm=num_perm, seed=1, scheme="affine32")
            for t in tokens:
                m.update(t)

    results["datasketch_update"], _ = rate(len(sub), per_token)
    sub_bulk = captions[:20000]
    shingled_bulk = [[s.encode() for s in shingles(c, ngram)] for c in sub_bulk]
    results["datasketch_bulk"], _ = rate(
        len(sub_bulk), lambda: MinHash.bulk(shingled_bulk, num_perm=num_perm, seed=1, scheme="affine32")
    )
    try:
        import rensa

        def with_rensa() -> None:
            for c in captions:
                r = rensa.RMinHash(num_perm=num_perm, seed=1)
                r.update(shingles(c, ngram))

        results["rensa"], _ = rate(len(captions), with_rensa)
    except ImportError:
        results["rensa"] = float("nan")
    return results


def bench_lsh(captions: list[str], num_perm: int) -> dict[str, float]:
    hasher = MinHasher(MinHashParams(num_perm=num_perm))
    sigs, empty = hasher.signatures(captions)
    params = LshParams(threshold=0.5)
    ours, _ = rate(len(captions), lambda: candidate_pairs(sigs, ~empty, params))
    sub = 20000
    bands, rows = bands_rows(params, num_perm)
    lean = [
        MinHash(num_perm=num_perm, seed=1, hashvalues=s, hashfunc=shingle_hash32, scheme="affine32") for s in sigs[:sub]
    ]

    def datasketch_lsh() -> None:
        index = MinHashLSH(num_perm=num_perm, params=(bands, rows))
        for i, m in enumerate(lean):
            index.insert(i, m)
        for m in lean:
            index.query(m)

    theirs, _ = rate(sub, datasketch_lsh)
    return {"ours_samples_per_s": ours, "datasketch_insert_query_per_s": theirs}


def bench_knn(x: np.ndarray, k: int = 10) -> dict[str, object]:
    exact_index = build_index(x, IndexParams(kind="flat", use_gpu=False))
    start = time.perf_counter()
    _, truth = exact_index.search(x, k)
    exact_s = time.perf_counter() - start
    out: dict[str, object] = {"exact_seconds": exact_s}
    for name, params in (
        ("ivf_nprobe8", IndexParams(kind="ivf", nprobe=8, use_gpu=False)),
        ("ivf_nprobe16", IndexParams(kind="ivf", nprobe=16, use_gpu=False)),
        ("hnsw_ef64", IndexParams(kind="hnsw", ef_search=64, use_gpu=False)),
    ):
        start = time.perf_counter()
        index = build_index(x, params)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        _, approx = index.search(x, k)
        search_s = time.perf_counter() - start
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, approx, strict=True)]))
        out[name] = {
            "build_s": build_s,
            "search_s": search_s,
            "recall@10": recall,
            "speedup_search": exact_s / search_s,
            "speedup_incl_build": exact_s / (search_s + build_s),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--captions", type=int, default=100_000)
    parser.add_argument("--embeddings", type=int, default=100_000)
    parser.add_argument("--out", default="bench/dedup_results.json")
    args = parser.parse_args()
    captions = synthetic_captions(args.captions)
    report: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "captions": len(captions),
        "signatures_word3_128perm": bench_signatures(captions, ngram=3, num_perm=128),
        "lsh": bench_lsh(captions, 128),
        "knn": bench_knn(clustered_embeddings(args.embeddings)),
    }
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
