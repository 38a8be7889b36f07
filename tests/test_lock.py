"""The CPU install is locked: requirements-cpu.lock pins every package exactly, and agrees with pyproject.toml."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

from tests.tools import load_tool

REPO = Path(__file__).resolve().parents[1]


def _lock_tool() -> ModuleType:
    return load_tool("lock")


lock = _lock_tool()


def test_the_lock_pins_every_direct_requirement_inside_its_range() -> None:
    pins = lock.read_lock()
    requirements = lock.direct_requirements()
    assert {"torch", "diffusers", "pytest", "ray", "moto"} <= set(pins)
    assert len(pins) > len(requirements)  # transitive packages are pinned too
    assert lock.disagreements(pins, requirements) == []


def test_requirements_cpu_installs_through_the_lock() -> None:
    lines = [ln.strip() for ln in (REPO / "requirements-cpu.txt").read_text().splitlines()]
    assert "-c requirements-cpu.lock" in lines and "-e ." in lines
    torch_pin = next(Requirement(ln) for ln in lines if ln.startswith("torch"))
    assert str(torch_pin.specifier) == f"=={lock.read_lock()['torch']}"


def test_a_drifted_lock_is_named() -> None:
    pins = {"numpy": "1.20.0", "torch": "2.13.0"}
    problems = lock.disagreements(pins, [Requirement("numpy>=1.26"), Requirement("torch>=2.4"), Requirement("scipy")])
    assert problems == ["numpy: locked at 1.20.0, outside numpy>=1.26", "scipy: required (scipy) but not in requirements-cpu.lock"]


def test_a_loose_line_in_the_lock_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "requirements-cpu.lock"
    bad.write_text("numpy==2.4.6\n    # via x\nscipy>=1.11\n")
    with pytest.raises(ValueError, match="3: not an exact pin"):
        lock.read_lock(bad)


def test_an_environment_off_the_lock_is_named() -> None:
    assert lock.installed_mismatches({"pytest": "0.0.1", "no-such-package-here": "1.0"}) == [
        "no-such-package-here: locked at 1.0, not installed",
        f"pytest: locked at 0.0.1, installed {pytest.__version__}",
    ]
