"""``corpus=embeddings``: a corpus of precomputed image embeddings and metadata (the clip-retrieval /
img2dataset layout), deduplicated without images; the removal list keyed by the corpus's own ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from memguard.common.cache import Cache
from memguard.corpus.embeddings import EmbeddingLayoutError, embedding_parts, metadata_of
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.dedup.decide.groups import sorted_group_ids
from memguard.dedup.executor import ExecutorConfig
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from tests.tools import REPO, load_bench

synthetic = load_bench("embedding_corpus")
ONE_WORKER = ExecutorConfig(workers=1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    synthetic.write_corpus(root, 2_000, dim=48, per_part=500, seed=3)
    return root


def _run(spec: CorpusSpec, out: Path, *, cache: Path, executor: ExecutorConfig = ONE_WORKER) -> dict[str, object]:
    result = run_dedup(open_corpus(spec, cache), DedupParams(), out_dir=out, cache=Cache(cache), executor=executor)
    return result.stats


def test_planted_duplicates_are_found_and_removed_by_the_corpus_id(planted: Path, tmp_path: Path) -> None:
    spec = CorpusSpec(kind="embeddings", path=str(planted), ground_truth=str(planted / "ground_truth.parquet"))
    stats = _run(spec, tmp_path / "out", cache=tmp_path / "cache")
    evaluation = stats["evaluation"]["injected"]  # type: ignore[index]
    assert evaluation["true_pairs"] > 40  # both copy kinds planted, across parts too
    assert evaluation["precision"] >= 0.99 and evaluation["recall"] >= 0.99
    assert stats["corpus"]["id_column"] == "key"  # type: ignore[index]
    assert stats["params"]["embedder"]["kind"] == "precomputed"  # type: ignore[index]
    assert set(stats["duplicates_by_signal"]) == {"image", "caption+image"}  # type: ignore[arg-type]

    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet")
    metadata = pa.concat_tables([pq.read_table(p.metadata) for p in embedding_parts(str(planted))])
    assert manifest.column("key").to_pylist() == metadata.column("key").to_pylist()  # every row once, in order
    removals = pq.read_table(tmp_path / "out" / "removals.parquet")
    assert removals.column_names == ["key", "duplicate_of", "cluster_id", "signal"]
    duplicates = manifest.filter(pc.equal(manifest.column("status"), "duplicate"))
    assert removals.column("key").to_pylist() == duplicates.column("key").to_pylist()
    # The curator's own table, filtered by the list: what is left is what dedup kept.
    kept = metadata.filter(pc.invert(pc.is_in(metadata.column("key"), value_set=removals.column("key"))))
    assert kept.num_rows == stats["status"]["kept"] == metadata.num_rows - removals.num_rows  # type: ignore[index]
    assert not (tmp_path / "out" / "shards").exists() and not (tmp_path / "out" / "contact_sheet.png").exists()


def test_the_result_does_not_depend_on_the_workers(planted: Path, tmp_path: Path) -> None:
    spec = CorpusSpec(kind="embeddings", path=str(planted))
    _run(spec, tmp_path / "one", cache=tmp_path / "c1")
    _run(spec, tmp_path / "two", cache=tmp_path / "c2", executor=ExecutorConfig(workers=2))
    for name in ("manifest.parquet", "removals.parquet", "clusters.parquet"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def _write_part(root: Path, n: int, vectors: np.ndarray | bytes, rows: dict[str, list[object]] | bytes) -> None:
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    if isinstance(vectors, bytes):
        (root / "img_emb" / f"img_emb_{n}.npy").write_bytes(vectors)
    else:
        np.save(root / "img_emb" / f"img_emb_{n}.npy", vectors, allow_pickle=False)
    if isinstance(rows, bytes):
        (root / "metadata" / f"metadata_{n}.parquet").write_bytes(rows)
    else:
        pq.write_table(pa.table(rows), root / "metadata" / f"metadata_{n}.parquet")


def _unit(i: int, dim: int = 8) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    v[i % dim] = 1.0
    return v


def test_every_bad_row_and_file_is_a_rejection_row(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    good = np.stack([_unit(i) for i in range(7)]).astype(np.float16)
    good[4] = np.nan  # a vector of NaN
    good[5] = 0  # a zero vector: no direction
    _write_part(root, 0, good, {  # seven vectors, six metadata rows
        "key": ["a", None, "c", "c", "e", "f"],
        "caption": ["a cat on a mat", "no key", "a dog", "a dog again", "nan vector", None],
    })  # fmt: skip
    _write_part(root, 1, np.stack([_unit(1), _unit(0)]).astype(np.float32), {  # two vectors, three rows
        "key": ["a", "h", "i"], "caption": ["repeated across parts", "a cat on a mat", "no vector"],
    })  # fmt: skip
    _write_part(root, 2, b"this is not an npy file", {"key": ["j", "k"], "caption": ["x y z", "u v w"]})
    _write_part(root, 3, good[:1], b"PAR1 broken")
    _write_part(root, 10, np.stack([_unit(5)]).astype(np.float16), {"key": [11], "caption": ["numeric ids"]})
    stats = _run(CorpusSpec(kind="embeddings", path=str(root)), tmp_path / "out", cache=tmp_path / "cache")
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    got = [(r["key"], r["status"], r["reason"]) for r in rows]
    assert got == [
        ("a", "kept", ""),
        ("metadata_0.parquet:1", "rejected", "bad_key"),
        ("c", "kept", ""),
        ("c", "rejected", "duplicate_key"),
        ("e", "rejected", "non_finite_embedding"),
        ("f", "rejected", "empty_caption"),
        ("img_emb_0.npy:6", "rejected", "incomplete_sample"),
        ("a", "rejected", "duplicate_key"),  # first seen in part 0
        ("h", "duplicate", ""),  # a's vector and caption: a duplicate of a
        ("i", "rejected", "incomplete_sample"),
        ("j", "rejected", "shard_unreadable"),
        ("k", "rejected", "shard_unreadable"),
        ("metadata_3.parquet", "rejected", "shard_unreadable"),
        ("11", "kept", ""),  # part 10 after part 3: numeric order, not by name
    ]
    assert stats["input_units"] == len(rows)
    assert [r["duplicate_of"] for r in rows if r["key"] == "h"] == ["a"]
    assert pq.read_table(tmp_path / "out" / "removals.parquet").column("key").to_pylist() == ["h"]
    zero = [r for r in rows if r["detail"] and "npy" in r["detail"]]
    assert zero and all("not a readable .npy array" in r["detail"] for r in zero if r["key"] in ("j", "k"))


def test_a_zero_vector_is_a_non_finite_rejection(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    _write_part(root, 0, np.stack([_unit(0), np.zeros(8, np.float32)]), {"key": ["a", "b"], "caption": ["x y", "x y"]})
    _run(CorpusSpec(kind="embeddings", path=str(root)), tmp_path / "out", cache=tmp_path / "cache")
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert [(r["status"], r["reason"]) for r in rows] == [("kept", ""), ("rejected", "non_finite_embedding")]


def test_layout_mistakes_are_clear_errors(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    with pytest.raises(FileNotFoundError, match="no embedding corpus"):
        embedding_parts(str(root))
    _write_part(root, 0, np.stack([_unit(0)]), {"key": ["a"], "caption": ["x"]})
    np.save(root / "img_emb" / "img_emb_1.npy", np.stack([_unit(1)]), allow_pickle=False)
    with pytest.raises(EmbeddingLayoutError, match=r"img_emb_1\.npy without its metadata"):
        embedding_parts(str(root))
    assert metadata_of(str(root / "img_emb" / "img_emb_1.npy")) == str(root / "metadata" / "metadata_1.parquet")
    (root / "img_emb" / "img_emb_1.npy").unlink()
    with pytest.raises(ValueError, match=r"corpus\.id_column='uid'"):
        open_corpus(CorpusSpec(kind="embeddings", path=str(root), id_column="uid"), tmp_path / "cache")
    with pytest.raises(ValueError, match=r"corpus\.id_column names a metadata column of corpus=embeddings"):
        CorpusSpec(kind="shards", path=str(root), id_column="url")


def test_null_pixel_hashes_never_group() -> None:
    assert sorted_group_ids(pa.array(["b", None, "a", "b", None])).tolist() == [1, 2, 0, 1, 3]


def test_python_m_dedup_runs_an_embedding_corpus(planted: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dedup", "corpus=embeddings", f"corpus.path={planted}", "corpus.id_column=url",
         f"output={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}", "executor.workers=1",
         f"hydra.run.dir={tmp_path / 'hydra'}"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "removals.parquet" in proc.stdout and "contact_sheet" not in proc.stdout
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["corpus"]["kind"] == "embeddings" and stats["status"]["duplicate"] > 40
    removals = pq.read_table(tmp_path / "out" / "removals.parquet")
    assert removals.column_names[0] == "url" and removals.num_rows == stats["status"]["duplicate"]
    assert all(url.startswith("https://images.invalid/") for url in removals.column("url").to_pylist())


def test_an_image_corpus_with_the_curator_s_vectors(cache_dir: Path, tmp_path: Path) -> None:
    """``dedup.image.embeddings``: the shards' vectors come from an embedding folder, joined by key (in
    another order than the shards, across two parts); a key it lacks, and one it holds twice, are
    ``no_embedding`` rows; the decisions are those of the same embedder run by us."""
    from memguard.corpus.validate import decode_image
    from memguard.dedup.signals.embed import EmbedderParams, make_embedder
    from tests.dedup.layouts import tiny_pairs, write_tars

    pairs = tiny_pairs(cache_dir)
    write_tars(tmp_path / "shards", pairs, shards=3)
    vectors = make_embedder(EmbedderParams(kind="pixels")).embed([decode_image(p.image) for p in pairs])
    order = np.random.default_rng(0).permutation(len(pairs))
    missing, twice = pairs[order[0]].key, pairs[order[1]].key
    keys = [pairs[i].key for i in order[1:]] + [twice]
    rows = np.concatenate([vectors[order[1:]], vectors[order[1:2]]])
    half = len(keys) // 2
    for n, part in enumerate((slice(0, half), slice(half, None))):
        _write_part(tmp_path / "emb", n, rows[part], {"key": keys[part], "caption": ["unused"] * len(keys[part])})

    corpus = open_corpus(CorpusSpec(kind="shards", path=str(tmp_path / "shards")), cache_dir)
    given = DedupParams(embeddings=str(tmp_path / "emb"), write_shards=False, sheet_clusters=0)
    ours = DedupParams(embedder=EmbedderParams(kind="pixels"), write_shards=False, sheet_clusters=0)
    run = {name: run_dedup(corpus, p, out_dir=tmp_path / name, cache=Cache(tmp_path / "cache"), executor=ONE_WORKER)
           for name, p in (("given", given), ("ours", ours))}  # fmt: skip
    assert run["given"].stats["params"]["embedder"]["kind"] == "precomputed"
    manifest = {r["key"]: r for r in pq.read_table(run["given"].manifest).to_pylist()}
    theirs = {r["key"]: r for r in pq.read_table(run["ours"].manifest).to_pylist()}
    assert manifest[missing]["reason"] == manifest[twice]["reason"] == "no_embedding"
    differ = [k for k in theirs if k not in (missing, twice) and theirs[k]["status"] != manifest[k]["status"]]
    assert len(differ) <= 2  # at most the clusters the two left out were in
    assert sum(r["status"] == "duplicate" for r in manifest.values()) >= 10
