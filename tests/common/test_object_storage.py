"""Shards read from, and outputs written to, a real S3-compatible server (moto's, started here on a free
port): ``python -m dedup`` against it gives the manifest of the same shards on local disk, secrets never
reach a log, and a run killed while committing leaves the previous result or nothing that looks complete."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from memguard.common.storage import filesystem, redact
from tests.conftest import S3_SECRET as SECRET
from tests.dedup.layouts import tiny_pairs, write_tars

BUCKET = "corpus"


@pytest.fixture(scope="module")
def shards(s3_env: dict[str, str], cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four shards on local disk, and the same four uploaded to s3://corpus/."""
    local = tmp_path_factory.mktemp("local")
    write_tars(local, tiny_pairs(cache_dir), shards=4)
    fs, _ = filesystem(f"s3://{BUCKET}")
    fs.mkdir(BUCKET)
    for path in sorted(local.glob("*.tar")):
        fs.put_file(str(path), f"{BUCKET}/{path.name}")
    return local


def _dedup(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dedup", *args, f"cache_dir={cwd / 'cache'}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def _remote_manifest(url: str) -> list[dict[str, object]]:
    fs, path = filesystem(url)
    fs.invalidate_cache()
    with fs.open(path, "rb") as fh:
        return pq.read_table(io.BytesIO(fh.read())).to_pylist()


def _comparable(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Rows with the shard named by its file name (the two runs read it from different places) and NaN
    as None (NaN != NaN)."""
    return [
        {**r, "source": str(r["source"]).rsplit("/", 1)[-1]}
        | {k: None for k, v in r.items() if isinstance(v, float) and v != v}
        for r in rows
    ]


def test_dedup_reads_and_writes_object_storage(s3_env: dict[str, str], shards: Path, tmp_path: Path) -> None:
    remote = _finish(
        _dedup(
            s3_env,
            tmp_path,
            "corpus=shards",
            f"corpus.path='s3://{BUCKET}/{{00000..00003}}.tar'",
            f"output=s3://{BUCKET}/clean",
        )
    )
    local = _finish(_dedup(s3_env, tmp_path, "corpus=shards", f"corpus.path={shards}", f"output={tmp_path / 'out'}"))
    rows = _remote_manifest(f"s3://{BUCKET}/clean/manifest.parquet")
    assert _comparable(rows) == _comparable(pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist())
    assert {r["source"] for r in rows} == {f"s3://{BUCKET}/{i:05d}.tar" for i in range(4)}
    fs, _ = filesystem(f"s3://{BUCKET}")
    fs.invalidate_cache()
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/clean")}
    assert {"manifest.parquet", "clusters.parquet", "removals.parquet", "stats.json", "shards", "contact_sheet.png"} == names
    kept_local = sorted(p.name for p in (tmp_path / "out" / "shards").iterdir())
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/clean/shards")) == kept_local
    stats = fs.cat(f"{BUCKET}/clean/stats.json").decode()
    for text in (remote, local, stats):
        assert SECRET not in text
    # A glob names the same shards.
    _finish(_dedup(s3_env, tmp_path, "corpus=shards", f"corpus.path=s3://{BUCKET}/*.tar", f"output=s3://{BUCKET}/glob"))
    assert _comparable(_remote_manifest(f"s3://{BUCKET}/glob/manifest.parquet")) == _comparable(rows)


def test_redact_drops_credentials_and_signatures() -> None:
    assert redact("s3://key:secret@bucket/a.tar") == "s3://bucket/a.tar"
    assert redact("https://host/a.tar?X-Amz-Signature=abc#f") == "https://host/a.tar"
    assert redact("/local/a.tar") == "/local/a.tar"


def _objects(prefix: str) -> list[str]:
    fs, path = filesystem(prefix)
    fs.invalidate_cache()
    try:
        return [p.split(path, 1)[1] for p in fs.find(path)]
    except FileNotFoundError:
        return []


def _kill_when(proc: subprocess.Popen[str], ready: object) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every 50 ms: the commit's windows last
    seconds); False if it finished first."""
    while proc.poll() is None:
        if ready():  # type: ignore[operator]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    return False


def test_killed_remote_commit_leaves_previous_result_or_none(
    s3_env: dict[str, str], shards: Path, tmp_path: Path
) -> None:
    out = f"s3://{BUCKET}/killed"
    # An output shard per three kept samples: dozens of objects to upload and move, a window of seconds
    # to kill in (polled every 50 ms).
    common = (
        "corpus=shards",
        f"corpus.path='s3://{BUCKET}/{{00000..00003}}.tar'",
        f"output={out}",
        "dedup.shard_size=3",
    )
    _finish(_dedup(s3_env, tmp_path, *common))
    first = _comparable(_remote_manifest(f"{out}/manifest.parquet"))
    changed = (*common, "dedup.image.threshold=0.995")

    # Killed while uploading the staged result: the previous result is untouched.
    proc = _dedup(s3_env, tmp_path, *changed)
    assert _kill_when(proc, lambda: any(p.startswith("/.staging-") for p in _objects(out))), "finished first"
    assert "/stats.json" in _objects(out)
    assert _comparable(_remote_manifest(f"{out}/manifest.parquet")) == first

    # Killed after the previous marker went: nothing there looks complete.
    proc = _dedup(s3_env, tmp_path, *changed)
    assert _kill_when(proc, lambda: "/stats.json" not in _objects(out)), "finished first"
    assert "/stats.json" not in _objects(out)

    # The rerun finishes, removes the stale staging and gives the result of a clean run.
    _finish(_dedup(s3_env, tmp_path, *changed))
    assert not any(p.startswith("/.staging-") for p in _objects(out))
    _finish(_dedup(s3_env, tmp_path, *changed[:2], f"output={tmp_path / 'clean'}", *changed[3:]))
    clean = pq.read_table(tmp_path / "clean" / "manifest.parquet").to_pylist()
    assert _comparable(_remote_manifest(f"{out}/manifest.parquet")) == _comparable(clean)
    assert _comparable(_remote_manifest(f"{out}/manifest.parquet")) != first
