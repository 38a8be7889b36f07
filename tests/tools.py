"""The scripts under tools/ and bench/ loaded as modules (neither is a package), for their tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def _load(folder: str, name: str) -> ModuleType:
    """``<folder>/<name>.py`` as the module ``<name>_<folder>`` (registered, so dataclasses in it resolve)."""
    module_name = f"{name}_{folder.rstrip('s')}"
    spec = importlib.util.spec_from_file_location(module_name, REPO / folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as the module ``<name>_tool``."""
    return _load("tools", name)


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as the module ``<name>_bench`` (the tests share its corpus builders)."""
    return _load("bench", name)
