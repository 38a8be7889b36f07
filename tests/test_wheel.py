"""The built wheel works without the source tree: configs ship inside it and every entry point composes."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_wheel_installs_into_a_fresh_venv_and_runs_from_another_folder(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # Build from a copy: setuptools writes build/ and *.egg-info into the source tree it builds.
    source = tmp_path / "src"
    top_level = {".git", ".cache", ".whl", "build", "dist", "runs", "multirun", "outputs"}

    def skip(folder: str, names: list[str]) -> set[str]:  # top-level scratch only: memguard/dedup/outputs/ is code
        here = {n for n in names if n.endswith(".egg-info") or n == "__pycache__"}
        return here | (top_level & set(names) if Path(folder) == REPO else set())

    shutil.copytree(REPO, source, ignore=skip)
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        tmp_path,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheels = list(dist.glob("memguard-*.whl"))
    assert len(wheels) == 1
    # The venv sees the dependencies the suite runs with (torch, diffusers, ...) but not the source tree. Its
    # parent is whatever interpreter runs the suite (a venv, a conda env, the base one), so its site folders are
    # added by a .pth file (``--system-site-packages`` would give the base interpreter's, not an active
    # venv's), and the editable install's finder they carry is dropped: only the wheel can answer an import.
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], tmp_path).returncode == 0
    python = str(venv / "bin" / "python")
    venv_site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
    parent_sites = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    (Path(venv_site.stdout.strip()) / "zz_parent_site.pth").write_text(
        "import site, sys; "
        + "; ".join(f"site.addsitedir({d!r})" for d in dict.fromkeys(parent_sites))
        + "; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
    )
    installed = _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])], tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([python, "-c", "import memguard.configs, dedup, torch; print(dedup.__file__, memguard.configs.__file__)"], elsewhere)
    assert where.returncode == 0, where.stderr[-2000:]
    assert str(REPO) not in where.stdout and where.stdout.count(str(venv)) == 2, where.stdout
    for module in ("dedup", "train", "extract"):
        proc = _run([python, "-m", module, "--cfg", "job"], elsewhere)
        assert proc.returncode == 0, f"{module}: {proc.stderr[-2000:]}"
        assert "corpus:" in proc.stdout and "dedup:" in proc.stdout
