"""Progress-bar labels that say which run they belong to ("raw: train", "dedup: generate") without
threading an arm name through every function between the experiment and the loops that draw the bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_SCOPE: ContextVar[str] = ContextVar("progress_scope", default="")


@contextmanager
def progress_scope(name: str) -> Iterator[None]:
    """Bars drawn inside are labelled ``name: <stage>``."""
    token = _SCOPE.set(name)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def progress_label(stage: str) -> str:
    scope = _SCOPE.get()
    return f"{scope}: {stage}" if scope else stage
