"""Which corpus to read: webdataset shards, an image folder, or the built-in Twemoji corpus."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.cache import fingerprint
from common.config import ConfigError
from dedup.builtin.twemoji import TwemojiConfig, build_twemoji
from dedup.io.readers import Item, find_shards, read_folder, read_shards
from dedup.io.validate import Limits


@dataclass(frozen=True)
class CorpusSpec:
    """kind: ``shards`` (path = folder, file or brace pattern), ``folder`` or ``twemoji``.

    ground_truth: optional parquet of injected copies (key, origin, natural_group), for evaluation only.
    heldout: optional shards never trained on (membership inference).
    """

    kind: Literal["shards", "folder", "twemoji"] = "twemoji"
    path: str | None = None
    ground_truth: str | None = None
    heldout: str | None = None
    twemoji: TwemojiConfig = field(default_factory=TwemojiConfig)


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """An opened corpus: a re-iterable reader plus what identifies its content."""

    kind: str
    location: str
    fingerprint: str
    ground_truth: Path | None
    heldout: str | None
    info: dict[str, object]
    limits: Limits

    def items(self) -> Iterator[Item]:
        if self.kind == "folder":
            return read_folder(self.location, self.limits)
        return read_shards(self.location, self.limits)


def _stat_fingerprint(paths: list[Path]) -> str:
    # Size + mtime, as make does: cheap for terabyte corpora, and a changed shard changes its stat.
    return fingerprint([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths])


def open_corpus(spec: CorpusSpec, cache_dir: str | os.PathLike[str], limits: Limits | None = None) -> Corpus:
    limits = limits or Limits()
    if spec.kind == "twemoji":
        built = build_twemoji(spec.twemoji, Path(cache_dir) / "corpus")
        return Corpus(
            kind="shards",
            location=str(built.train),
            fingerprint=f"twemoji-{spec.twemoji.fingerprint()}",
            ground_truth=built.ground_truth,
            heldout=str(built.heldout),
            info=built.info,
            limits=limits,
        )
    if not spec.path:
        raise ConfigError(f"corpus.path is required for corpus={spec.kind}")
    gt = Path(spec.ground_truth) if spec.ground_truth else None
    if spec.kind == "folder":
        root = Path(spec.path)
        if not root.is_dir():
            raise NotADirectoryError(f"image folder not found: {root}")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return Corpus(
            kind="folder",
            location=str(root),
            fingerprint=_stat_fingerprint(files),
            ground_truth=gt,
            heldout=spec.heldout,
            info={},
            limits=limits,
        )
    if spec.kind == "shards":
        found, skipped = find_shards(spec.path)
        urls = [Path(u) for u in found]
        missing = [str(u) for u in urls if not u.exists()]
        if not urls or missing:
            raise FileNotFoundError(f"shards not found for {spec.path!r}: {missing[:5] or 'none matched'}")
        return Corpus(
            kind="shards",
            location=spec.path,
            fingerprint=_stat_fingerprint(urls),
            ground_truth=gt,
            heldout=spec.heldout,
            info={"skipped_inputs": skipped} if skipped else {},
            limits=limits,
        )
    raise ConfigError(f"corpus.kind must be one of shards, folder, twemoji; got {spec.kind!r}")
