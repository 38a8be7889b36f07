"""The CPU install's lock: refresh it from pyproject.toml, check that the two agree, check an environment against it.

    python tools/lock.py refresh      # re-resolve (pip-tools), rewrite requirements-cpu.lock
    python tools/lock.py check        # pyproject.toml and the lock agree (also a test: tests/test_lock.py)
    python tools/lock.py installed    # this interpreter has exactly the locked versions (.ci/run)

``requirements-cpu.txt`` installs with the lock as pip constraints, so both README commands (the runtime
install, and the one with the ``dev`` extra) get exact versions of every package, direct and transitive.
pyproject.toml keeps lower bounds for library users. The resolution itself is pip-tools' (pip's resolver);
only the checks are written here, because no tool compares a lock with pyproject's specifiers and with an
installed environment in one step.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements-cpu.lock"
REQUIREMENTS = REPO / "requirements-cpu.txt"
# The extras the lock covers: `dev` carries the test tools and the ray and s3 extras' packages.
LOCKED_EXTRAS = ("dev",)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """Canonical package name -> pinned version; every requirement line must be an exact ``==`` pin."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{path.name}:{number}: not an exact pin: {line!r}")
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def direct_requirements(extras: tuple[str, ...] = LOCKED_EXTRAS) -> list[Requirement]:
    """pyproject.toml's runtime dependencies, those of the locked extras, and requirements-cpu.txt's pins."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    lines += [ln.strip() for ln in REQUIREMENTS.read_text().splitlines() if ln.strip() and not ln.startswith(("#", "-"))]
    return [Requirement(line) for line in lines]


def disagreements(pins: dict[str, str], requirements: list[Requirement]) -> list[str]:
    """What makes the lock disagree with its sources: a direct requirement it lacks or pins outside its range."""
    problems = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate():
            continue
        if name not in pins:
            problems.append(f"{req.name}: required ({req}) but not in {LOCK.name}")
        elif not req.specifier.contains(Version(pins[name]), prereleases=True):
            problems.append(f"{req.name}: locked at {pins[name]}, outside {req}")
    return problems


def installed_mismatches(pins: dict[str, str]) -> list[str]:
    """Locked packages that this interpreter lacks or has at another version (local labels like +cpu aside)."""
    problems = []
    for name, version in sorted(pins.items()):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: locked at {version}, not installed")
            continue
        if Version(have).public != Version(version).public:
            problems.append(f"{name}: locked at {version}, installed {have}")
    return problems


def refresh() -> None:
    """Re-resolve with pip-tools against the indexes pip is configured for; torch's pin comes from
    requirements-cpu.txt, written without the local label so that it matches the CPU build wherever it lies."""
    pinned = [ln for ln in REQUIREMENTS.read_text().splitlines() if ln.strip() and not ln.startswith(("#", "-"))]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "requirements-cpu.txt"
        source.write_text("\n".join(pinned) + "\n")
        out = Path(tmp) / "lock.txt"
        cmd = [sys.executable, "-m", "piptools", "compile", "--quiet", "--strip-extras", "--no-emit-index-url",
               "--no-emit-find-links", "--no-header", "--upgrade", *(f"--extra={e}" for e in LOCKED_EXTRAS),
               f"--output-file={out}", "pyproject.toml", str(source)]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True)
        text = out.read_text().replace(str(source), "requirements-cpu.txt")
    text = re.sub(r"^(torch==[^+\s]+)\+\S+", r"\1", text, flags=re.MULTILINE)
    header = (
        "# Exact versions of every package the CPU install and its dev extra resolve to (pip constraints, read by\n"
        "# requirements-cpu.txt). Refresh: pip install pip-tools && python tools/lock.py refresh\n"
    )
    tmp_lock = LOCK.with_suffix(".lock.tmp")
    tmp_lock.write_text(header + text)
    tmp_lock.replace(LOCK)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["refresh", "check", "installed"])
    args = parser.parse_args(argv)
    if args.command == "refresh":
        refresh()
    pins = read_lock()
    problems = installed_mismatches(pins) if args.command == "installed" else disagreements(pins, direct_requirements())
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{LOCK.name}: {len(pins)} pins, {args.command}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
