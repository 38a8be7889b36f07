"""Wall time and peak memory per step, for stats.json and the report."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class StepTimer:
    """Collects ``{step: {"seconds": s, "peak_rss_mb": m, "cached": bool}}``."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float | bool]] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, float | bool]]:
        record: dict[str, float | bool] = {"cached": False}
        start = time.perf_counter()
        try:
            yield record
        finally:
            record["seconds"] = round(time.perf_counter() - start, 3)
            record["peak_rss_mb"] = round(peak_rss_mb(), 1)
            self.steps[name] = record
