"""Plain dicts (what Hydra composes, after ``OmegaConf.to_container``) → typed, frozen dataclasses.

Every stage's entry point uses this one builder. Unknown keys are errors, so a typo in an override never
silently does nothing.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def build(cls: type[T], values: dict[str, Any] | None) -> T:
    """Instantiate a (nested) frozen dataclass from a dict, rejecting unknown keys."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {sorted(unknown)}; known: {sorted(names)}")
    for name, value in list(values.items()):
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            values[name] = build(hint, value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)
