"""Deterministic webdataset shard writer: temp name + rename, fixed mtime, a keys parquet per shard."""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

import pyarrow as pa

from memguard.common.atomic import atomic_path, write_table
from memguard.corpus.sample import Sample

if TYPE_CHECKING:
    import webdataset as wds

FIXED_MTIME = 0.0  # reproducible shards: two runs over the same input are byte-identical


def sample_to_wds(sample: Sample, weight: float | None = None) -> dict[str, bytes | str]:
    """The webdataset dict for one Sample: ``key.<image_ext>``, ``key.txt``, ``key.json``."""
    meta = dict(sample.meta)
    if weight is not None:
        meta["sampling_weight"] = weight
    record: dict[str, bytes | str] = {
        "__key__": sample.key,
        sample.image_ext: sample.image,
        "txt": sample.caption.encode("utf-8"),
    }
    if meta:
        record["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return record


class ShardWriter:
    """Write Samples into ``<folder>/<prefix>-NNNNNN.tar`` with at most ``max_count`` samples each.

    Each shard is written to a temporary name and renamed when complete, then its keys are written to
    ``<prefix>-NNNNNN.keys.parquet`` (also atomically). ``shards`` lists the finished shard paths.
    """

    def __init__(self, folder: str | os.PathLike[str], max_count: int = 10_000, prefix: str = "shard") -> None:
        if max_count < 1:
            raise ValueError(f"max_count must be >= 1, got {max_count}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_count = max_count
        self.prefix = prefix
        self.shards: list[Path] = []
        self._index = 0
        self._keys: list[str] = []
        self._captions: list[str] = []
        self._ctx: AbstractContextManager[Path] | None = None
        self._tmp: Path | None = None
        self._tar: wds.TarWriter | None = None
        self._file: BinaryIO | None = None

    def _open(self) -> None:
        final = self.folder / f"{self.prefix}-{self._index:06d}.tar"
        self._ctx = atomic_path(final)
        self._tmp = self._ctx.__enter__()
        # We open the file (WDS_SECURE forbids webdataset's gopen on local paths); PAX headers carry unicode
        # and long keys; encoder=False: the members are bytes we prepared.
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in _close
        import webdataset as wds  # here, not at import: webdataset imports torch (~2 s), and a run that stops
        # at a bad config, or never writes a shard, need not pay for it

        self._tar = wds.TarWriter(self._file, encoder=False, mtime=FIXED_MTIME, format="PAX_FORMAT")

    def _close(self, failed: bool = False) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._tar = None
        if self._file is not None:
            self._file.close()
            self._file = None
        final = self.folder / f"{self.prefix}-{self._index:06d}.tar"
        ctx = self._ctx
        self._ctx = None
        assert ctx is not None
        if failed:
            ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            return
        ctx.__exit__(None, None, None)
        keys_table = pa.table({"key": self._keys, "caption": self._captions})
        write_table(final.with_suffix(".keys.parquet"), keys_table)
        self.shards.append(final)
        self._keys, self._captions = [], []
        self._index += 1

    def write(self, sample: Sample, weight: float | None = None) -> None:
        if self._tar is None:
            self._open()
        assert self._tar is not None
        self._tar.write(sample_to_wds(sample, weight))
        self._keys.append(sample.key)
        self._captions.append(sample.caption)
        if len(self._keys) >= self.max_count:
            self._close()

    def close(self) -> None:
        self._close()

    def abort(self) -> None:
        """Drop the shard being written (its temporary file); finished shards stay."""
        self._close(failed=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(failed=exc_type is not None)
