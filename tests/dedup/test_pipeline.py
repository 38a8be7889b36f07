"""The dedup stage end to end: invariants of the manifest, outputs, cache reuse, policies, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from memguard.common.cache import Cache
from memguard.corpus.readers import read_shards
from memguard.corpus.sample import Reason, Sample
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.twemoji import TwemojiConfig
from memguard.dedup.decide.cluster import ClusterRule
from memguard.dedup.executor import ExecutorConfig
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from memguard.dedup.signals.robust import RobustEmbedder
from tests.conftest import TINY_TWEMOJI, count_units, encode, random_rgb

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    corpus = open_corpus(CorpusSpec(twemoji=TINY_TWEMOJI), cache_dir)
    out = tmp_path_factory.mktemp("dedup")
    result = run_dedup(corpus, DedupParams(shard_size=40), out_dir=out, cache=Cache(cache_dir))
    return corpus, result


def test_manifest_accounts_for_every_unit(tiny) -> None:  # type: ignore[no-untyped-def]
    corpus, result = tiny
    rows = pq.read_table(result.manifest).to_pylist()
    independent = sum(count_units(p) for p in sorted(Path(corpus.location).glob("*.tar")))
    assert len(rows) == independent == result.stats["input_units"]
    status = result.stats["status"]
    assert sum(status.values()) == independent
    kept = {r["key"] for r in rows if r["status"] == "kept"}
    for r in rows:
        if r["status"] == "duplicate":
            assert r["duplicate_of"] in kept and r["signal"] and r["weight"] == 0  # no chains
    assert result.stats["duplicates_by_signal"]


def test_output_shards_hold_exactly_the_kept_samples(tiny) -> None:  # type: ignore[no-untyped-def]
    _, result = tiny
    rows = pq.read_table(result.manifest).to_pylist()
    kept = [r["key"] for r in rows if r["status"] == "kept"]
    items = list(read_shards(str(result.shards)))
    assert all(isinstance(i, Sample) for i in items)
    assert [i.key for i in items] == kept
    strict = wds.WebDataset(
        sorted(str(p) for p in Path(str(result.shards)).glob("*.tar")),
        shardshuffle=False,
        handler=wds.reraise_exception,
    )
    assert sum(1 for _ in strict) == len(kept)
    clusters = pq.read_table(Path(result.out_dir) / "clusters.parquet").to_pylist()
    assert clusters and all(c["size"] == len(c["members"]) >= 2 and c["keeper"] in kept for c in clusters)
    assert (Path(result.out_dir) / "contact_sheet.png").stat().st_size > 0
    stats = json.loads((Path(result.out_dir) / "stats.json").read_text())
    assert {"map", "caption_pairs", "image_neighbors", "cluster", "apply"} <= set(stats["steps"])
    assert "precision" in stats["evaluation"]["injected"] and stats["evaluation"]["definitions"]


def test_threshold_sweep_reuses_cached_steps(tiny, cache_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corpus, _ = tiny
    cache = Cache(cache_dir)
    params = DedupParams(rule=ClusterRule(image_threshold=0.99, caption_threshold=0.9), write_shards=False)
    result = run_dedup(corpus, params, out_dir=tmp_path, cache=cache)
    assert cache.misses == []
    assert {"map", "caption_pairs", "image_neighbors"} <= set(cache.hits)
    assert all(result.stats["steps"][s]["cached"] for s in ("map", "caption_pairs", "image_neighbors"))


def test_reweight_and_keep_policies(tiny, cache_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corpus, _ = tiny
    result = run_dedup(corpus, DedupParams(policy="reweight"), out_dir=tmp_path / "rw", cache=Cache(cache_dir))
    rows = [r for r in pq.read_table(result.manifest).to_pylist() if r["status"] != "rejected"]
    assert {r["status"] for r in rows} == {"kept"}
    per_cluster: dict[int, float] = {}
    for r in rows:
        per_cluster[r["cluster_id"]] = per_cluster.get(r["cluster_id"], 0.0) + r["weight"]
    assert np.allclose(list(per_cluster.values()), 1.0)
    weights = [s.meta["sampling_weight"] for s in read_shards(str(result.shards)) if isinstance(s, Sample)]
    assert len(weights) == len(rows) and min(weights) < 1.0
    keep = run_dedup(
        corpus, DedupParams(policy="keep", write_shards=False), out_dir=tmp_path / "k", cache=Cache(cache_dir)
    )
    assert keep.stats["status"] == {"kept": len(rows)}
    sem = run_dedup(
        corpus, DedupParams(policy="semdedup", write_shards=False), out_dir=tmp_path / "s", cache=Cache(cache_dir)
    )
    assert sem.stats["status"]["duplicate"] > 0


def test_non_finite_embedding_is_a_rejection(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    corpus, _ = tiny
    original = RobustEmbedder.embed

    def faulty(self: RobustEmbedder, images):  # type: ignore[no-untyped-def]
        out = original(self, images)
        out[0] = np.nan  # fault injection: one embedding per batch comes back NaN
        return out

    monkeypatch.setattr(RobustEmbedder, "embed", faulty)
    params = DedupParams(write_shards=False)  # one worker: the patched embedder runs in this process
    result = run_dedup(
        corpus, params, out_dir=tmp_path, cache=Cache(tmp_path / "cache"), executor=ExecutorConfig(workers=1)
    )
    rows = pq.read_table(result.manifest).to_pylist()
    nan_rows = [r for r in rows if r["reason"] == str(Reason.NON_FINITE_EMBEDDING)]
    assert len(nan_rows) >= 1 and len(rows) == result.stats["input_units"]


def test_invalid_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="min_sim"):
        DedupParams(rule=ClusterRule(image_threshold=0.5))
    with pytest.raises(ValueError, match="policy"):
        DedupParams(policy="delete")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_config_on_corpora_it_was_not_tuned_on(cache_dir: Path, tmp_path: Path, seed: int) -> None:
    """The default thresholds were chosen on the seed-0 corpus (precision 0.985, recall 0.951); other
    draws of emoji and injected copies measured precision 0.986 / 0.985 / 0.940 and recall 0.980 / 0.965 /
    0.982 (seeds 1-3, bench/RESULTS.md). The bar sits under those with a stated margin."""
    corpus = open_corpus(CorpusSpec(twemoji=TwemojiConfig(seed=seed)), cache_dir)
    result = run_dedup(corpus, DedupParams(write_shards=False), out_dir=tmp_path, cache=Cache(cache_dir))
    injected = result.stats["evaluation"]["injected"]
    assert injected["precision"] >= 0.92 and injected["recall"] >= 0.94, injected


def test_cli_on_foreign_webdataset_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shards = tmp_path / "laion"
    shards.mkdir()
    # The shards come from webdataset's own ShardWriter, which opens paths through gopen: allow that for
    # the writer here (WDS_SECURE=1 in CI forbids it); the dedup run below keeps WDS_SECURE on.
    monkeypatch.setattr(wds.utils, "enforce_security", False)
    with wds.ShardWriter(str(shards / "part-%05d.tar"), maxcount=5) as sink:
        for i in range(8):
            sink.write(
                {
                    "__key__": f"{i:09d}",
                    "jpg": encode(random_rgb(i % 5), "JPEG"),
                    "txt": f"photo {i % 5}",
                    "json": json.dumps({"url": f"http://x/{i}"}).encode(),
                }
            )
        sink.write({"__key__": "000000099", "jpg": b"broken", "txt": "broken image"})
    out = tmp_path / "clean"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dedup",
            "corpus=shards",
            f"corpus.path={shards}",
            f"output={out}",
            f"cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "9 input units" in proc.stdout and "rejected 1" in proc.stdout and "duplicate 3" in proc.stdout
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [r["reason"] for r in rows if r["status"] == "rejected"] == [str(Reason.UNDECODABLE)]


def test_corpus_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_corpus(CorpusSpec(kind="shards", path=str(tmp_path / "none-{0..3}.tar")), tmp_path)
    with pytest.raises(ValueError):
        open_corpus(replace(CorpusSpec(), kind="shards"), tmp_path)
