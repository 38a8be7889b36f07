"""The suite runs where users run it: from any working directory, in a venv or on the base interpreter."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def test_each_test_starts_in_an_empty_folder_outside_the_repo() -> None:
    here = Path.cwd().resolve()
    assert not here.is_relative_to(REPO) and not any(here.iterdir())


def test_no_test_relies_on_the_base_interpreter_or_a_bare_executable() -> None:
    # The interpreter running the suite is sys.executable; "python"/"pytest" on PATH may be another one, and
    # --system-site-packages or sys.base_prefix name the base interpreter's packages, not an active venv's.
    pattern = re.compile(r"""system-site-packages["']|base_prefix|\[\s*["'](python3?|pytest|pip)["']""")
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_paths_in_tests_are_anchored_to_files_not_to_the_working_directory() -> None:
    # A relative path that names a repo folder only resolves when the suite is started from the repo root.
    pattern = re.compile(r"""(open|Path)\(\s*f?["'](tests|bench|configs|docs|dedup|train|extract)/""")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) or "getcwd()" in line or "Path.cwd()" in line
    ]
    assert not offenders, offenders
