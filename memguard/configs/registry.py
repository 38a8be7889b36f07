"""The defaults of every config group come from the library's dataclasses, registered here as each group's
``base`` node: a key is defined and documented once, in its dataclass, and the YAML files hold only what a
profile changes (``memguard/configs/model/unet_text.yaml``: ``kind: unet_text``). Each entry point calls
``register(...)`` for the groups it composes before Hydra runs."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
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


# group → (module, dataclass); imported only when the group is registered, so `python -m dedup` does
# not pay for torch.
_DATACLASSES = {
    "corpus": ("memguard.corpus.spec", "CorpusSpec"),
    "limits": ("memguard.corpus.validate", "Limits"),
    "executor": ("memguard.dedup.executor", "ExecutorConfig"),
    "model": ("memguard.diffusion.models", "ModelConfig"),
    "train": ("memguard.train.config", "TrainConfig"),
    "mitigation": ("memguard.train.mitigations", "MitigationConfig"),
    "extract": ("memguard.extract.config", "AuditConfig"),
}


# group → (module, function): groups whose vocabulary differs from their dataclass's shape.
_VOCABULARIES = {"dedup": ("memguard.dedup.config", "default_values")}


def group_defaults(group: str) -> dict[str, Any]:
    """The base node of ``group``: the dataclass defaults in the group's vocabulary."""
    if group in _VOCABULARIES:
        module, function = _VOCABULARIES[group]
        return _plain(getattr(importlib.import_module(module), function)())
    if group not in _DATACLASSES:
        raise KeyError(f"no defaults registered for config group {group!r}")
    module, name = _DATACLASSES[group]
    return _plain(asdict(getattr(importlib.import_module(module), name)()))


DEDUP_GROUPS = ("corpus", "dedup", "limits", "executor")
ALL_GROUPS = (*DEDUP_GROUPS, "model", "train", "mitigation", "extract")


def register(groups: tuple[str, ...] = ALL_GROUPS) -> None:
    store = ConfigStore.instance()
    for group in groups:
        store.store(group=group, name="base", node=group_defaults(group))


def leaf_paths(groups: tuple[str, ...] = ALL_GROUPS) -> dict[str, list[str]]:
    """Leaf name → the dotted keys that end with it (``policy`` → ``dedup.policy``), for suggestions."""
    found: dict[str, list[str]] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        else:
            found.setdefault(path.rsplit(".", 1)[-1], []).append(path)

    for group in groups:
        walk(group_defaults(group), group)
    return found


def precheck_overrides(argv: list[str], top_level: set[str], groups: tuple[str, ...]) -> None:
    """Before Hydra parses the command line: a bare ``policy=foo`` names no top-level key, and Hydra would
    suggest ``+policy=foo``, which adds a key nothing reads. Name the nested key instead."""
    from memguard.common.config import ConfigError

    for arg in argv:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key = arg.split("=", 1)[0]
        if "." in key or key in top_level or key in groups or key.startswith("hydra"):
            continue
        near = leaf_paths(groups).get(key, [])
        value = arg.split("=", 1)[1]
        hint = f"; did you mean {' or '.join(f'{p}={value}' for p in near)}?" if near else ""
        raise ConfigError(f"unknown key {key!r}{hint}")


def run_entry(name: str, main: Callable[[], None], *, top_level: set[str], groups: tuple[str, ...]) -> None:
    """An entry point's ``run``: the overrides checked first (a mistake is one line and exit 2), then
    Hydra's ``main``."""
    from memguard.common.errors import one_line_errors

    with one_line_errors(name):
        precheck_overrides(sys.argv[1:], top_level, groups)
    main()
