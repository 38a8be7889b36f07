"""Every metadata layout gives the manifest of the equivalent ``.txt`` layout; image-only dedup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from memguard.common.cache import Cache
from memguard.corpus.discover import find_shards
from memguard.corpus.readers import read_folder
from memguard.corpus.sample import Rejection, Sample
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from tests.dedup.layouts import Pair, tiny_pairs, write_folder, write_img2dataset_parquets, write_tars

PARAMS = DedupParams(write_shards=False, sheet_clusters=0)


@pytest.fixture(scope="module")
def pairs(cache_dir: Path) -> list[Pair]:
    return tiny_pairs(cache_dir)


def _manifest(spec: CorpusSpec, cache_dir: Path, out: Path, params: DedupParams = PARAMS) -> list[dict[str, object]]:
    result = run_dedup(open_corpus(spec, cache_dir), params, out_dir=out, cache=Cache(cache_dir))
    rows = pq.read_table(result.manifest).to_pylist()
    root = spec.path or ""
    for row in rows:  # the layouts live in different folders: compare where inside them a row came from
        row["source"] = str(row["source"]).removeprefix(root)
        del row["offset"]  # byte offsets differ: the layouts store different members
        row.update({k: None for k, v in row.items() if isinstance(v, float) and math.isnan(v)})  # NaN != NaN
    return rows


def _shards(folder: Path) -> CorpusSpec:
    return CorpusSpec(kind="shards", path=str(folder))


def test_shard_metadata_layouts_match_the_txt_layout(pairs: list[Pair], cache_dir: Path, tmp_path: Path) -> None:
    write_tars(tmp_path / "txt", pairs, shards=3)
    reference = _manifest(_shards(tmp_path / "txt"), cache_dir, tmp_path / "o1")
    assert sum(r["status"] == "duplicate" for r in reference) >= 5  # a corpus with decisions to agree on

    write_tars(tmp_path / "json", pairs, shards=3, caption_in="json:caption")
    assert _manifest(_shards(tmp_path / "json"), cache_dir, tmp_path / "o2") == reference

    write_tars(tmp_path / "alt", pairs, shards=3, caption_in="json:alt_text")
    spec = CorpusSpec(kind="shards", path=str(tmp_path / "alt"), caption_field="alt_text")
    assert _manifest(spec, cache_dir, tmp_path / "o3") == reference

    tars = write_tars(tmp_path / "i2d", pairs, shards=3, caption_in="none")
    write_img2dataset_parquets(tars, pairs)
    assert find_shards(str(tmp_path / "i2d"))[1] == []  # the parquets are the shards' metadata, not skipped
    assert _manifest(_shards(tmp_path / "i2d"), cache_dir, tmp_path / "o4") == reference


def test_img2dataset_failures_are_manifest_rows(pairs: list[Pair], cache_dir: Path, tmp_path: Path) -> None:
    tars = write_tars(tmp_path / "i2d", pairs, shards=2, caption_in="none")
    write_img2dataset_parquets(tars, pairs, failed=3)
    rows = _manifest(_shards(tmp_path / "i2d"), cache_dir, tmp_path / "out")
    failed = [r for r in rows if r["reason"] == "not_downloaded"]
    assert len(failed) == 6 and len(rows) == len(pairs) + 6
    assert all(r["detail"] == "img2dataset status=failed_to_download: HTTP Error 404: Not Found" for r in failed)
    assert {r["source"] for r in failed} == {"/00000.tar", "/00001.tar"}


def test_folder_metadata_layouts_match_txt_sidecars(pairs: list[Pair], cache_dir: Path, tmp_path: Path) -> None:
    reference = _manifest(
        CorpusSpec(kind="folder", path=str(write_folder(tmp_path / "t", pairs, layout="txt"))),
        cache_dir,
        tmp_path / "o1",
    )
    assert len(reference) == len(pairs)
    for layout in ("jsonl", "csv"):
        root = write_folder(tmp_path / layout, pairs, layout=layout)
        spec = CorpusSpec(kind="folder", path=str(root))
        assert _manifest(spec, cache_dir, tmp_path / f"o-{layout}") == reference, layout


def test_unusable_metadata_lines_are_rows(pairs: list[Pair], tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", pairs[:4], layout="jsonl")
    with open(root / "metadata.jsonl", "a") as fh:
        fh.write("{not json\n")
        fh.write('["a list"]\n')
        fh.write('{"file_name": "../escape.png", "text": "x"}\n')
        fh.write('{"file_name": "a/gone.png", "text": "listed, not there"}\n')
        fh.write(json.dumps({"file_name": f"a/{pairs[0].key}.{pairs[0].ext}", "text": 7}) + "\n")
    (root / "a" / f"{pairs[0].key}.{pairs[0].ext}").unlink()
    items = list(read_folder(root))
    rejected = {(r.key, str(r.reason)) for r in items if isinstance(r, Rejection)}
    assert {
        ("metadata.jsonl:3", "bad_meta"),
        ("metadata.jsonl:4", "bad_meta"),
        ("metadata.jsonl:5", "bad_meta"),
        ("metadata.jsonl:7", "bad_meta"),  # listed twice
        ("metadata.jsonl:1", "incomplete_sample"),  # names an image that is not in the folder
        ("metadata.jsonl:6", "incomplete_sample"),
    } == rejected
    assert sum(isinstance(i, Sample) for i in items) == 3


def test_caption_field_that_holds_no_text_is_a_row(pairs: list[Pair], tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", pairs[:2], layout="jsonl")
    lines = (root / "metadata.jsonl").read_text().replace('"text": ', '"text": 1, "caption": ').splitlines()
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    spec_items = list(read_folder(root))
    assert all(isinstance(i, Sample) for i in spec_items)  # ``caption`` comes first when both are there
    (root / "metadata.jsonl").write_text((root / "metadata.jsonl").read_text().replace('"caption"', '"other"'))
    rows = [i for i in read_folder(root) if isinstance(i, Rejection) and i.key.startswith("a__")]
    assert rows and all("'text' holds int" in r.detail for r in rows)


def test_image_only_dedup_reads_uncaptioned_images(pairs: list[Pair], cache_dir: Path, tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", pairs, layout="none")
    captioned = _manifest(CorpusSpec(kind="folder", path=str(root)), cache_dir, tmp_path / "o1")
    assert {r["reason"] for r in captioned} == {"incomplete_sample"}  # captions are required by default
    image_only = DedupParams(write_shards=False, sheet_clusters=0, caption_enabled=False)
    rows = _manifest(CorpusSpec(kind="folder", path=str(root)), cache_dir, tmp_path / "o2", image_only)
    assert {r["status"] for r in rows} == {"kept", "duplicate"}
    assert {r["signal"] for r in rows} == {"", "keeper", "exact_pixels", "image"}
