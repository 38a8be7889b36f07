"""Plain dicts (what Hydra composes, after ``OmegaConf.to_container``) → typed, frozen dataclasses, and the
checks every entry point runs on them before any work.

Every stage's entry point uses this one builder. Unknown keys and values of the wrong type are errors
that name the key, so a typo in an override never silently does nothing; range checks live in each
dataclass's ``__post_init__`` (``in_range``) and run when the builder instantiates it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A user's configuration mistake: reported as one line naming the key, exit code 2."""


class OutputInsideInput(ConfigError):
    """An output or cache folder inside the input corpus: it would be read back as input, or change the
    input while it is read. ``root`` is the input folder, so the entry point can remove what Hydra already
    created inside it."""

    def __init__(self, message: str, root: str) -> None:
        super().__init__(message)
        self.root = root


class RunError(RuntimeError):
    """The run cannot go on for a reason outside the code (an input changed under it, a folder it may not
    write): reported as one line, exit code 1, with nothing half-written committed."""


def in_range(name: str, value: float, *, lo: float | None = None, hi: float | None = None) -> None:
    """Raise ConfigError unless lo <= value <= hi (either bound optional) and value is a finite number: NaN
    fails no comparison, so it would pass every bound and silently switch a threshold off."""
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ConfigError(f"{name} must be in {bounds}, got {value}")


# A speed switch: on, off, or auto (the code decides from the device; each switch documents how).
SWITCH_VALUES = (True, False, "auto", "on", "off", "true", "false")


def switch_value(value: bool | str) -> bool | None:
    """True, False, or None for ``auto``."""
    if value == "auto":
        return None
    return value in (True, "on", "true")


def one_of(name: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits the annotation (the subset our configs use)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, list | tuple) and all(any(_accepts(a, v) for a in args) for v in value)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is dict:
        return isinstance(value, dict)
    return True  # a type we do not check here (the dataclass itself may)


def build(cls: type[T], values: dict[str, Any] | None, path: str = "") -> T:
    """Instantiate a (nested) frozen dataclass from a dict, rejecting unknown keys and wrong types;
    ``path`` (``"dedup.image"``) prefixes the key in error messages."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{path}." if path else ""
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in sorted(unknown))}; known: {sorted(names)}")
    for name, value in list(values.items()):
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            values[name] = build(hint, value, prefix + name)  # type: ignore[arg-type]
            continue
        if not _accepts(hint, value):
            raise ConfigError(f"{prefix}{name}: expected {_describe(hint)}, got {value!r}")
        if not all_finite(value):
            raise ConfigError(f"{prefix}{name}: expected a finite number, got {value!r}")
        if isinstance(value, list):
            values[name] = tuple(value)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path or cls.__name__}: {err}") from err


def all_finite(value: Any) -> bool:
    """False for a float (or a float in a list or tuple) that is NaN or ±inf: no setting of ours means either."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(all_finite(v) for v in value)
    return True


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_keys(values: dict[str, Any], allowed: set[str], leaves: Callable[[], dict[str, list[str]]]) -> None:
    """Top-level keys must be known (``+policy=foo`` would otherwise add a key nothing reads); suggest the
    nested key a misplaced one probably meant."""
    for key in sorted(set(values) - allowed):
        near = leaves().get(key, [])
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise ConfigError(f"unknown key {key!r}{hint}")
