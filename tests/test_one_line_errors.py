"""Every entry point fails with one line and an exit code, never a traceback: outputs placed inside the
input, outputs and caches that are files or not writable, a full disk, a broken model folder, Ctrl-C —
and no worker process outlives the run (docs/RELIABILITY.md, third round)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from memguard.common.errors import describe_os_error, one_line_errors
from tests.conftest import add_member, encode, random_rgb

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WDS_SECURE": "1", "RAY_AUTH_MODE": "disabled"}
ENV.pop("HYDRA_FULL_ERROR", None)


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )


def _one_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def _photos(folder: Path, count: int = 6) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"p{i}.png").write_bytes(encode(random_rgb(i)))
        (folder / f"p{i}.txt").write_text(f"photo {i}")
    return folder


def _listing(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def test_the_obvious_first_try_inside_a_photo_folder_is_one_line_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    before = _listing(photos)
    proc = _cli("dedup", "corpus=folder", "corpus.path=.", cwd=photos)
    _one_line(proc, 2, "inside the input folder")
    assert _listing(photos) == before  # no .cache/, no runs/, no .lock


@pytest.mark.parametrize("where", ["same", "inside", "link"])
def test_an_output_inside_the_input_is_refused(tmp_path: Path, where: str) -> None:
    photos = _photos(tmp_path / "photos")
    out = {"same": photos, "inside": photos / "clean", "link": tmp_path / "link" / "clean"}[where]
    if where == "link":
        (tmp_path / "link").symlink_to(photos)
    before = _listing(photos)
    proc = _cli("dedup", "corpus=folder", f"corpus.path={photos}", f"output={out}", f"cache_dir={tmp_path / 'c'}",
                cwd=tmp_path)  # fmt: skip
    _one_line(proc, 2, "output=", "inside the input folder")
    assert _listing(photos) == before


def test_a_cache_inside_the_shard_folder_is_refused(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "000.tar", "w") as tar:
        add_member(tar, "a.png", encode(random_rgb(1)))
        add_member(tar, "a.txt", b"a")
    proc = _cli("dedup", "corpus=shards", f"corpus.path={shards}", f"output={tmp_path / 'o'}",
                f"cache_dir={shards / '.cache'}", cwd=tmp_path)  # fmt: skip
    _one_line(proc, 2, "cache_dir=", "inside the input folder")
    assert not (shards / ".cache").exists()


@pytest.mark.parametrize("which", ["output", "cache_dir"])
def test_an_output_or_cache_that_is_a_file_is_one_line(tmp_path: Path, which: str) -> None:
    photos = _photos(tmp_path / "photos")
    (tmp_path / "a-file").write_text("not a folder")
    places = {"output": tmp_path / "o", "cache_dir": tmp_path / "c", which: tmp_path / "a-file"}
    proc = _cli("dedup", "corpus=folder", f"corpus.path={photos}", *(f"{k}={v}" for k, v in places.items()),
                cwd=tmp_path)  # fmt: skip
    _one_line(proc, 1, "a-file")
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    # /sys refuses mkdir even to root (a read-only cache folder cannot be simulated with chmod as root)
    proc = _cli("dedup", "corpus=folder", f"corpus.path={photos}", f"output={tmp_path / 'o'}",
                "cache_dir=/sys/memguard-cache", cwd=tmp_path)  # fmt: skip
    _one_line(proc, 1, "not allowed", "/sys/memguard-cache")


def test_a_changed_input_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    from memguard.corpus.spec import InputChanged

    with pytest.raises(SystemExit) as exit_info, one_line_errors("dedup"):
        raise InputChanged("/d/009.tar changed since it was mapped (unit 3 is not the one mapped); rerun")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "dedup: error: /d/009.tar changed since it was mapped (unit 3 is not the one mapped); rerun\n"


def test_numpys_errno_less_disk_full_is_named_as_a_full_disk() -> None:
    assert describe_os_error(OSError("Not enough free space to write 4096 bytes")).startswith("no space left")
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/c/x.npy")).startswith("no space left")
    assert "not allowed" in describe_os_error(OSError(errno.EROFS, "Read-only file system", "/c"))
    with pytest.raises(SystemExit) as exit_info, one_line_errors("dedup"):
        raise OSError("Not enough free space to write 4096 bytes")
    assert exit_info.value.code == 1


@pytest.mark.parametrize("damage", ["not-json", "not-utf8", "no-unet", "bad-weights"])
def test_extract_on_a_broken_model_folder_is_one_line(tmp_path: Path, damage: str) -> None:
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "scheduler").mkdir()
    config = {"kind": "unet_uncond", "resolution": 8, "channels": [16, 32]}
    (model / "memguard.json").write_text(json.dumps(config))
    (model / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    (model / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    if damage == "not-json":
        (model / "memguard.json").write_text("{not json")
    elif damage == "not-utf8":
        (model / "memguard.json").write_bytes(b"\xff\xfe{}")
    elif damage == "no-unet":
        (model / "unet" / "config.json").unlink()
    else:
        (model / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    shards = tmp_path / "heldout"
    shards.mkdir()
    with tarfile.open(shards / "000.tar", "w") as tar:
        add_member(tar, "h.png", encode(random_rgb(1)))
        add_member(tar, "h.txt", b"held out")
    proc = _cli("extract", f"model_dir={model}", f"corpus.heldout={shards / '000.tar'}", f"output={tmp_path / 'o'}",
                f"cache_dir={tmp_path / 'c'}", "corpus.twemoji.subset=40", cwd=tmp_path)  # fmt: skip
    _one_line(proc, 2, "model_dir", str(model))


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _busy_corpus(folder: Path) -> Path:
    folder.mkdir()
    for s in range(4):
        with tarfile.open(folder / f"{s:03d}.tar", "w") as tar:
            for i in range(400):
                add_member(tar, f"s{s}_{i}.png", encode(random_rgb(1000 * s + i, 64)))
                add_member(tar, f"s{s}_{i}.txt", f"sample {s} {i}".encode())
    return folder


def _as_from_a_terminal() -> None:
    """Ctrl-C handled by default, as in a terminal: a test runner's worker may start its children with
    SIGINT ignored, and a run that inherits an ignored SIGINT rightly keeps ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_busy_run(tmp_path: Path) -> tuple[subprocess.Popen[str], set[int]]:
    shards = _busy_corpus(tmp_path / "shards")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dedup", "corpus=shards", f"corpus.path={shards}", f"output={tmp_path / 'o'}",
         f"cache_dir={tmp_path / 'c'}", "executor.workers=2"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_as_from_a_terminal,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 3:  # resource tracker, fork server, a worker or two
        time.sleep(0.05)
        workers = _descendants(proc.pid)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert len(workers) >= 3, "the pool never started"
    return proc, workers  # interrupted as soon as the pool starts: the hardest moment to stop it cleanly


def _gone_within(pids: set[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pids):
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_is_one_line_and_stops_the_workers(tmp_path: Path) -> None:
    proc, workers = _start_busy_run(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole process group
    _, stderr = proc.communicate(timeout=60)
    lines = stderr.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], stderr[-3000:]
    assert _gone_within(workers, 10), _alive(workers)
    assert not (tmp_path / "o" / "manifest.parquet").exists()


def test_workers_die_with_a_killed_run(tmp_path: Path) -> None:
    proc, workers = _start_busy_run(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # the main process alone
    proc.communicate(timeout=60)
    assert _gone_within(workers, 10), _alive(workers)


def test_the_fork_server_preload_leaves_ctrl_c_alone_elsewhere() -> None:
    # Python's own handler set explicitly: a test runner's worker may start its children with SIGINT ignored.
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "import memguard.dedup.pool_worker; "
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
