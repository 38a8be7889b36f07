"""Each cache kind's version is tied to its code: a code change without a version bump fails here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.tools import load_tool

REPO = Path(__file__).resolve().parents[2]


def _tool() -> ModuleType:
    return load_tool("cache_steps")


def test_every_kind_code_matches_its_recorded_version() -> None:
    tool = _tool()
    recorded = json.loads(tool.RECORD.read_text())
    assert tool.problems(recorded, tool.current()) == []


def test_a_code_change_at_the_same_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _tool()
    module = tmp_path / "step_code_probe.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    module.write_text('"""A doc."""\n\ndef f(x):\n    return x + 1  # a comment\n')
    before = tool.module_digest("step_code_probe")
    module.write_text('"""Another doc."""\n\n\ndef f(x):\n    """Says what f does."""\n    return x + 1\n')
    sys.modules.pop("step_code_probe", None)
    assert tool.module_digest("step_code_probe") == before  # docstrings, comments and layout do not count
    module.write_text("def f(x):\n    return x + 2\n")
    after = tool.module_digest("step_code_probe")
    assert after != before
    recorded = {"probe": {"version": 1, "modules": {"step_code_probe": before}}}
    assert "code changed" in tool.problems(recorded, {"probe": {"version": 1, "modules": {"step_code_probe": after}}})[0]
    assert "run record" in tool.problems(recorded, {"probe": {"version": 2, "modules": {"step_code_probe": after}}})[0]
    assert tool.problems(recorded, {"probe": {"version": 1, "modules": {"step_code_probe": before}}}) == []


def test_every_listed_module_exists() -> None:
    tool = _tool()
    for step in tool.STEPS.values():
        for name in step.modules:
            assert importlib.util.find_spec(name) is not None, name
