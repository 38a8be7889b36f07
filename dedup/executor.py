"""How the map stage runs (the ``executor`` config group)."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import in_range, one_of


@dataclass(frozen=True)
class ExecutorConfig:
    """kind: local — a process pool over the corpus's parts (shards) on this machine. workers: processes
    (0: every core this process may use). The result does not depend on either."""

    kind: str = "local"
    workers: int = 0

    def __post_init__(self) -> None:
        one_of("executor.kind", self.kind, ("local",))
        in_range("executor.workers", self.workers, 0)
