"""One small corpus written in every layout curators have: webdataset ``.txt``, ``.json`` captions,
img2dataset's per-shard parquet, and image folders with sidecars or Hugging Face ``metadata.jsonl``/``.csv``."""

from __future__ import annotations

import csv
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from memguard.corpus.sample import Sample
from memguard.corpus.spec import CorpusSpec, open_corpus
from tests.conftest import TINY_TWEMOJI, add_member


@dataclass(frozen=True)
class Pair:
    key: str
    image: bytes
    ext: str
    caption: str


def tiny_pairs(cache_dir: Path) -> list[Pair]:
    """The tiny built-in corpus's samples (injected copies included): realistic duplicates to decide on."""
    corpus = open_corpus(CorpusSpec(twemoji=TINY_TWEMOJI), cache_dir)
    return [Pair(s.key, s.image, s.image_ext, s.caption) for s in corpus.items() if isinstance(s, Sample)]


def chunks(pairs: list[Pair], n: int) -> list[list[Pair]]:
    size = -(-len(pairs) // n)
    return [pairs[i * size : (i + 1) * size] for i in range(n)]


def write_tars(folder: Path, pairs: list[Pair], *, shards: int, caption_in: str = "txt") -> list[Path]:
    """``{i:05d}.tar`` shards; the caption as a ``.txt`` member, in a ``.json`` field (``caption_in`` =
    ``json:<field>``) or nowhere (``none``: it then lives in a parquet beside the shard)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(chunks(pairs, shards)):
        path = folder / f"{i:05d}.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for pair in part:
                add_member(tar, f"{pair.key}.{pair.ext}", pair.image)
                if caption_in == "txt":
                    add_member(tar, f"{pair.key}.txt", pair.caption.encode())
                elif caption_in.startswith("json:"):
                    meta = {caption_in.split(":", 1)[1]: pair.caption, "url": f"https://example.org/{pair.key}"}
                    add_member(tar, f"{pair.key}.json", json.dumps(meta).encode())
        paths.append(path)
    return paths


def write_img2dataset_parquets(tars: list[Path], pairs: list[Pair], *, failed: int = 0) -> None:
    """img2dataset's ``00000.parquet`` beside each tar: key, caption, url, status, error_message, width,
    height — plus ``failed`` rows per shard that it could not download (in no tar)."""
    for i, (tar, part) in enumerate(zip(tars, chunks(pairs, len(tars)), strict=True)):
        rows = [
            {
                "key": p.key,
                "caption": p.caption,
                "url": f"https://example.org/{p.key}",
                "status": "success",
                "error_message": None,
                "width": 16,
                "height": 16,
            }
            for p in part
        ]
        rows += [
            {
                "key": f"{i:05d}{j:04d}x",
                "caption": "never downloaded",
                "url": f"https://example.org/missing/{j}",
                "status": "failed_to_download",
                "error_message": "HTTP Error 404: Not Found",
                "width": None,
                "height": None,
            }
            for j in range(failed)
        ]
        pq.write_table(pa.Table.from_pylist(rows), tar.with_suffix(".parquet"))


def write_folder(root: Path, pairs: list[Pair], *, layout: str) -> Path:
    """An image folder in two subfolders; captions as ``.txt`` sidecars or in a ``metadata.jsonl`` /
    ``metadata.csv`` (the root's file lists the first subfolder; the second has its own ``.jsonl``)."""
    halves = chunks(pairs, 2)
    for half, sub in zip(halves, ("a", "b/c"), strict=True):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for pair in half:
            (root / sub / f"{pair.key}.{pair.ext}").write_bytes(pair.image)
            if layout == "txt":
                (root / sub / f"{pair.key}.txt").write_text(pair.caption)
    if layout == "jsonl":
        with open(root / "metadata.jsonl", "w") as fh:
            for pair in halves[0]:
                fh.write(json.dumps({"file_name": f"a/{pair.key}.{pair.ext}", "text": pair.caption}) + "\n")
    elif layout == "csv":
        with open(root / "metadata.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file_name", "text"])
            writer.writerows([f"a/{pair.key}.{pair.ext}", pair.caption] for pair in halves[0])
    if layout in ("jsonl", "csv"):
        with open(root / "b" / "c" / "metadata.jsonl", "w") as fh:
            for pair in halves[1]:
                fh.write(json.dumps({"file_name": f"{pair.key}.{pair.ext}", "text": pair.caption}) + "\n")
    return root
