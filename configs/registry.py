"""The defaults of every config group come from the library's dataclasses, registered here as each group's
``base`` node: a key is defined and documented once, in its dataclass, and the YAML files hold only what a
profile changes (``configs/model/unet_text.yaml``: ``kind: unet_text``). Each entry point calls
``register(...)`` for the groups it composes before Hydra runs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hydra.core.config_store import ConfigStore


def _plain(value: Any) -> Any:
    """Tuples → lists (OmegaConf stores sequences as lists), recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def group_defaults(group: str) -> dict[str, Any]:
    """The base node of ``group``: the dataclass defaults in the group's vocabulary."""
    if group == "corpus":
        from dedup.io.corpus import CorpusSpec

        return _plain(asdict(CorpusSpec()))
    if group == "dedup":
        from dedup.config import dedup_values
        from dedup.pipeline import DedupParams

        return _plain(dedup_values(DedupParams()))
    if group == "limits":
        from dedup.io.validate import Limits

        return _plain(asdict(Limits()))
    if group == "model":
        from diffusion.models import ModelConfig

        return _plain(asdict(ModelConfig()))
    if group == "train":
        from train.loop import TrainConfig

        return _plain(asdict(TrainConfig()))
    if group == "mitigation":
        from train.mitigations import MitigationConfig

        return _plain(asdict(MitigationConfig()))
    if group == "extract":
        from extract.config import AuditConfig

        return _plain(asdict(AuditConfig()))
    raise KeyError(f"no defaults registered for config group {group!r}")


DEDUP_GROUPS = ("corpus", "dedup", "limits")
ALL_GROUPS = (*DEDUP_GROUPS, "model", "train", "mitigation", "extract")


def register(groups: tuple[str, ...] = ALL_GROUPS) -> None:
    store = ConfigStore.instance()
    for group in groups:
        store.store(group=group, name="base", node=group_defaults(group))
