"""Kill training with SIGKILL (at a random step, and inside a checkpoint save), resume, and get bit-identical
final weights and the same sample order as an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from memguard.corpus.twemoji import build_twemoji
from tests.conftest import TINY_TWEMOJI

REPO = Path(__file__).resolve().parents[2]


def _run(shards: Path, cache: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "tests.train.run_training",
        "--shards",
        str(shards),
        "--cache",
        str(cache),
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _weights(out: Path) -> dict[str, np.ndarray]:
    return load_file(str(out / "model" / "unet" / "diffusion_pytorch_model.safetensors"))


def _order(out: Path) -> dict[int, list[int]]:
    """Batch number → indices; a resumed run logs replayed batches again, which must agree."""
    seen: dict[int, list[int]] = {}
    for line in (out.parent / f"{out.name}.order.jsonl").read_text().splitlines():
        number, index = json.loads(line)
        assert seen.setdefault(number, index) == index, f"batch {number} differs after resume"
    return seen


@pytest.fixture(scope="module")
def reference(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    shards = build_twemoji(TINY_TWEMOJI, cache_dir / "corpus").train
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    proc = _run(shards, cache_dir, out)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    return shards, out


@pytest.fixture(scope="module")
def reference_device_path(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    shards = build_twemoji(TINY_TWEMOJI, cache_dir / "corpus").train
    out = tmp_path_factory.mktemp("resume") / "uninterrupted_device_path"
    proc = _run(shards, cache_dir, out, "--device-path")
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    return shards, out


@pytest.mark.parametrize(
    ("seed", "fmt", "device_path"),
    [(0, "memguard", False), (3, "accelerate", False), (5, "memguard", True),
     pytest.param(1, "memguard", False, marks=pytest.mark.slow)],
)  # fmt: skip
def test_kill_at_random_step_then_resume(
    request: pytest.FixtureRequest, cache_dir: Path, tmp_path: Path, seed: int, fmt: str, device_path: bool
) -> None:
    """Both checkpoint formats: ours, and accelerate's save_state / load_state (what FSDP and DeepSpeed
    runs use) plus our EMA and generator; and the GPU's sync-free step path (per-micro-batch draws, the
    skip and the EMA's step count kept on the device) run on the CPU."""
    shards, uninterrupted = request.getfixturevalue("reference_device_path" if device_path else "reference")
    extra = ("--format", fmt, *(("--device-path",) if device_path else ()))
    out = tmp_path / "killed"
    proc = _run(shards, cache_dir, out, *extra)
    rng = np.random.default_rng(seed)  # seeded: a failure names the moment that broke resume
    deadline = time.time() + 300
    target = int(rng.integers(1, 5))  # die after 1..4 complete checkpoints, at a random moment
    while time.time() < deadline and len(list((out / "checkpoints").glob("step-*"))) < min(target, 2):
        time.sleep(0.05)
    time.sleep(float(rng.uniform(0, 0.5)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if fmt == "accelerate":
        assert all((c / "accelerate" / "model.safetensors").exists() for c in (out / "checkpoints").glob("step-*"))
    resumed = _run(shards, cache_dir, out, *extra)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:] if resumed.stderr else ""
    a, b = _weights(uninterrupted), _weights(out)
    assert a.keys() == b.keys()
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
    assert _order(out) == _order(uninterrupted)


def _alive(pid: str) -> bool:
    """Running (a zombie waiting to be reaped is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def streamed(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    shards = build_twemoji(TINY_TWEMOJI, cache_dir / "corpus").train
    out = tmp_path_factory.mktemp("resume") / "streamed"
    proc = _run(shards, cache_dir, out, "--stream", "2")
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    return shards, out


def test_streaming_loader_resumes_mid_epoch_bit_identical(
    streamed: tuple[Path, Path], cache_dir: Path, tmp_path: Path
) -> None:
    """Streaming from the shards with two DataLoader workers; ~130 samples, batches of 8: the kill
    lands mid-epoch, and the resumed run replays each worker's stream to its next batch."""
    shards, uninterrupted = streamed
    out = tmp_path / "killed"
    proc = _run(shards, cache_dir, out, "--stream", "2")
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").glob("step-*")):
        time.sleep(0.05)
    time.sleep(float(np.random.default_rng(2).uniform(0, 0.5)))
    workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10  # the loader workers die with their parent, not orphaned
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)]
    resumed_from = sorted((out / "checkpoints").glob("step-*"))
    assert resumed_from, "killed before the first checkpoint"
    resumed = _run(shards, cache_dir, out, "--stream", "2")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:] if resumed.stderr else ""
    a, b = _weights(uninterrupted), _weights(out)
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []


def test_kill_inside_checkpoint_save_then_resume(reference: tuple[Path, Path], cache_dir: Path, tmp_path: Path) -> None:
    shards, uninterrupted = reference
    out = tmp_path / "killed_in_save"
    proc = _run(shards, cache_dir, out, "--die-in-save", "2")
    assert proc.wait(timeout=600) == -signal.SIGKILL
    assert list((out / "checkpoints").glob(".step-*.partial"))  # the half-written save is there ...
    resumed = _run(shards, cache_dir, out)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:] if resumed.stderr else ""
    assert not list((out / "checkpoints").glob(".step-*.partial"))  # ... ignored and cleaned up
    a, b = _weights(uninterrupted), _weights(out)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert _order(out) == _order(uninterrupted)
