"""A content-addressed cache for expensive steps (ingest, signatures, embeddings, neighbours).

A step's folder is named by a hash of everything that determines its output; it is filled in a temp
folder and renamed when complete, so a killed run never leaves a half-written entry that looks done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (dataclasses via their ``__dict__``)."""
    blob = json.dumps(parts, sort_keys=True, default=lambda o: getattr(o, "__dict__", str(o)))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:20]


@dataclass
class StepCache:
    """``get(step, key, compute)`` returns the folder of a finished step, computing it on a miss."""

    root: Path
    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def get(self, step: str, key: str, compute: Callable[[Path], None]) -> Path:
        final = self.root / step / key
        if (final / "_COMPLETE").exists():
            log.info("cache hit: %s (%s), reusing %s", step, key, final)
            self.hits.append(step)
            return final
        self.misses.append(step)
        tmp = final.with_name(final.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        compute(tmp)
        (tmp / "_COMPLETE").write_text("")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final
