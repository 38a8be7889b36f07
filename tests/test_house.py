"""The house rules ruff does not check (tools/house.py): functions of at most 80 lines, no import cycle
between packages. Each rule is shown to catch a breach in a small tree of its own."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tests.tools import load_tool

REPO = Path(__file__).resolve().parents[1]


def _house() -> ModuleType:
    return load_tool("house")


def test_the_library_keeps_the_house_rules() -> None:
    house = _house()
    assert house.long_functions() == []
    assert house.import_cycles() == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_long_function_and_a_package_cycle_are_found(tmp_path: Path) -> None:
    house = _house()
    body = "".join(f"    x{i} = {i}\n" for i in range(80))
    _write(
        tmp_path,
        {
            "memguard/__init__.py": "",
            "memguard/a/__init__.py": "",
            "memguard/a/one.py": f"from memguard.b import two\n\ndef long():\n{body}",
            "memguard/b/__init__.py": "",
            "memguard/b/two.py": "from memguard.a.one import long\n",
            "memguard/b/__main__.py": "from memguard.a import one\n",  # entry points never close a cycle
            "memguard/c/__init__.py": "",
            "memguard/c/sub/__init__.py": "",
            "memguard/c/sub/child.py": "from memguard.c import parent\n",  # a parent and its child: no cycle
            "memguard/c/parent.py": "from memguard.c.sub import child\n",
        },
    )
    assert [line.split(":")[0] for line in house.long_functions(tmp_path)] == [str(Path("memguard/a/one.py"))]
    cycles = house.import_cycles(tmp_path)
    assert len(cycles) == 1 and "memguard.a" in cycles[0] and "memguard.b" in cycles[0], cycles
