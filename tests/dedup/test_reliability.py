"""No input can crash a run, no output can lie, no cache can be corrupted (docs/RELIABILITY.md)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from memguard.common.cache import Cache
from memguard.corpus.readers import read_folder
from memguard.corpus.sample import Reason, Rejection
from memguard.corpus.spec import CorpusSpec, open_corpus
from memguard.corpus.validate import Limits
from memguard.corpus.writer import ShardWriter
from memguard.dedup.executor import ExecutorConfig
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import run_dedup
from tests.conftest import add_member, count_units, encode, random_rgb

REPO = Path(__file__).resolve().parents[2]
CRASHERS = REPO / "tests" / "data" / "crashers"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WDS_SECURE": "1"}


def _tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w", fmt: int = tarfile.GNU_FORMAT) -> None:
    with tarfile.open(path, mode, format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for name, data in members:
            add_member(tar, name, data)


def _raw(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _dedup_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dedup", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shard folder with every case the reliability issue found: fuzz crashers, names that are not UTF-8
    (six variants), compressed shards of any case, a subfolder, and a file that is no shard."""
    root = tmp_path_factory.mktemp("hostile") / "shards"
    (root / "sub").mkdir(parents=True)
    good = encode(random_rgb(1))
    crashers = sorted(CRASHERS.glob("*.bin"))
    assert crashers, "the regression inputs are missing"
    _tar(
        root / "crashers.tar",
        [m for i, p in enumerate(crashers) for m in ((f"c{i}.jpg", p.read_bytes()), (f"c{i}.txt", b"crasher"))],
    )
    with tarfile.open(
        root / "names.tar", "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape"
    ) as tar:
        add_member(tar, _raw(b"bad\xffname.jpg"), good)  # a sample whose key is not UTF-8
        add_member(tar, _raw(b"bad\xffname.txt"), b"caption")
        add_member(tar, _raw(b"evil\xfe.pyd"), b"\x80\x04pickle")
        add_member(tar, _raw(b"noext\xfd"), b"x")
        link = tarfile.TarInfo(_raw(b"link\xfc.png"))
        link.type, link.linkname = tarfile.SYMTYPE, "x.png"
        tar.addfile(link)
        folder = tarfile.TarInfo(_raw(b"dir\xfb"))
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        add_member(tar, "ok.png", good)
        add_member(tar, "ok.txt", b"a fine sample")
    # PAX with hdrcharset=BINARY: tarfile writes it for a name that is not UTF-8.
    _tar(
        root / "pax.tar", [(_raw(b"pax\xff.jpg"), good), (_raw(b"pax\xff.txt"), b"pax caption")], fmt=tarfile.PAX_FORMAT
    )
    assert b"hdrcharset=BINARY" in (root / "pax.tar").read_bytes()
    for i, (name, mode) in enumerate(
        (("a.tar.gz", "w:gz"), ("b.tgz", "w:gz"), ("c.TAR", "w"), ("sub/d.tar.xz", "w:xz"), ("sub/e.tar.bz2", "w:bz2"))
    ):
        _tar(root / name, [(f"z{i}.png", encode(random_rgb(20 + i))), (f"z{i}.txt", f"compressed {i}".encode())], mode)
    (root / "README.md").write_text("not a shard")
    return root


def _independent_units(root: Path) -> int:
    shards = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".md"]
    return sum(count_units(p, unsafe=frozenset({"pyd"})) for p in shards)


def test_hostile_corpus_runs_and_accounts_for_every_unit(hostile: Path, tmp_path: Path) -> None:
    proc = _dedup_cli(
        "corpus=shards",
        f"corpus.path={hostile}",
        f"output={tmp_path / 'out'}",
        f"cache_dir={tmp_path / 'c'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert len(rows) == _independent_units(hostile)
    by_reason = {r["key"]: r["reason"] for r in rows}
    assert by_reason["bad\\xffname"] == str(Reason.BAD_KEY)
    assert by_reason["pax\\xff"] == str(Reason.BAD_KEY)
    assert by_reason["evil\\xfe.pyd"] == str(Reason.UNSAFE_MEMBER)
    assert by_reason["noext\\xfd"] == str(Reason.UNKNOWN_MEMBER)
    assert by_reason["link\\xfc.png"] == by_reason["dir\\xfb"] == str(Reason.NOT_REGULAR_FILE)
    crashers = [r for r in rows if r["source"].endswith("crashers.tar")]
    assert crashers and all(r["status"] == "rejected" and r["reason"] == str(Reason.UNDECODABLE) for r in crashers)
    assert {r["key"] for r in rows if r["status"] != "rejected"} >= {"ok", "z0", "z1", "z2", "z3", "z4"}
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert [s["path"] for s in stats["corpus"]["info"]["skipped_inputs"]] == [str(hostile / "README.md")]
    assert "skipped 1 files" in proc.stdout


def test_member_bytes_are_capped_before_reading(tmp_path: Path) -> None:
    """A 1 MB .tar.gz holding a 1 GiB member: the reader streams past it, memory stays flat."""
    bomb = tmp_path / "bomb.tar.gz"
    size = 1 << 30
    small = encode(random_rgb(3))

    def member(name: str, length: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = length
        return info.tobuf(tarfile.GNU_FORMAT)

    # Written as raw tar blocks through one gzip stream in large chunks (tarfile's 16 KiB copies through
    # gzip take ten times longer): header, 1 GiB of zeros, then a normal sample and the end blocks.
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(bomb, "wb") as fh:
        fh.write(gz.compress(member("huge.png", size)))
        chunk = bytes(64 << 20)
        for _ in range(size // len(chunk)):
            fh.write(gz.compress(chunk))
        tail = b""
        for name, data in (("huge.txt", b"caption"), ("small.png", small), ("small.txt", b"caption")):
            tail += member(name, len(data)) + data + bytes(-len(data) % 512)
        fh.write(gz.compress(tail + bytes(1024)))
        fh.write(gz.flush())
    assert bomb.stat().st_size < 1_200_000  # about 1 MB on disk
    script = textwrap.dedent(
        f"""
        import resource, sys
        from memguard.corpus.readers import read_tar
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        items = list(read_tar({str(bomb)!r})) if sys.argv[1] == "bomb" else []
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(base, peak, [(type(i).__name__, getattr(i, "reason", "")) for i in items])
        """
    )
    baseline = subprocess.run([sys.executable, "-c", script, "none"], capture_output=True, text=True, cwd=REPO, env=ENV)
    run = subprocess.run([sys.executable, "-c", script, "bomb"], capture_output=True, text=True, cwd=REPO, env=ENV)
    assert run.returncode == 0, run.stderr[-2000:]
    base_peak = int(baseline.stdout.split()[1])
    peak = int(run.stdout.split()[1])
    assert peak <= base_peak + 100 * 1024, (base_peak, peak)  # KiB: at most 100 MB above the baseline
    assert "TOO_LARGE" in run.stdout and "('Sample', '')" in run.stdout


def test_folder_reader_records_unreadable_files_and_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "locked").mkdir()
    for stem in ("a/one", "two"):
        (tmp_path / f"{stem}.png").write_bytes(encode(random_rgb(5)))
        (tmp_path / f"{stem}.txt").write_text("caption")
    real_scandir, real_open = os.scandir, os.open

    def scandir(path):  # type: ignore[no-untyped-def]
        if str(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    def os_open(path, flags, *args):  # type: ignore[no-untyped-def]
        if str(path).endswith("two.png"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    # Tests run as root, where chmod 000 still reads: the refusal is simulated at the OS call.
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", os_open)
    items = list(read_folder(tmp_path))
    rejected = {i.key: (i.reason, i.detail) for i in items if isinstance(i, Rejection)}
    assert rejected["locked"][0] == Reason.UNREADABLE
    assert rejected["two"][0] == Reason.UNREADABLE and "two.png" in rejected["two"][1]
    assert [i.key for i in items if not isinstance(i, Rejection)] == ["a__one"]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    members = []
    for i in range(30):
        members += [(f"s{i:02d}.png", encode(random_rgb(100 + i % 20))), (f"s{i:02d}.txt", f"sample {i % 20}".encode())]
    _tar(root / "part-0.tar", members[:30])
    _tar(root / "part-1.tar", members[30:])
    return root


def _listing(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.name != ".lock"}


@pytest.mark.parametrize("failure", ["sigint", "enospc"])
def test_interrupted_write_keeps_the_previous_result(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(small_corpus)), tmp_path / "c")
    out = tmp_path / "out"
    first = run_dedup(corpus, DedupParams(policy="keep", shard_size=7), out_dir=out, cache=Cache(tmp_path / "c"))
    before = {name: (out / name).read_bytes() for name in ("manifest.parquet", "stats.json")}
    listing = _listing(out)
    written = 0
    real_write = ShardWriter.write

    def dying_write(self, sample, weight=None):  # type: ignore[no-untyped-def]
        nonlocal written
        written += 1
        if written == 10:  # mid-way through the second shard
            raise KeyboardInterrupt() if failure == "sigint" else OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, sample, weight)

    monkeypatch.setattr(ShardWriter, "write", dying_write)
    with pytest.raises(KeyboardInterrupt if failure == "sigint" else OSError):  # one worker: the fault is in-process
        run_dedup(
            corpus,
            DedupParams(policy="remove", shard_size=7),
            out_dir=out,
            cache=Cache(tmp_path / "c"),
            executor=ExecutorConfig(workers=1),
        )
    assert _listing(out) == listing  # the previous result, untouched: no staging folder, no temp file
    assert {name: (out / name).read_bytes() for name in before} == before
    monkeypatch.setattr(ShardWriter, "write", real_write)
    second = run_dedup(corpus, DedupParams(policy="remove", shard_size=7), out_dir=out, cache=Cache(tmp_path / "c"))
    kept = {r["key"] for r in pq.read_table(second.manifest).to_pylist() if r["status"] == "kept"}
    written_keys = [
        k for p in sorted((out / "shards").glob("*.keys.parquet")) for k in pq.read_table(p).column("key").to_pylist()
    ]
    assert (
        sorted(written_keys) == sorted(kept) and len(kept) < first.stats["kept_samples"]
    )  # no stale shard of the first run
    assert not list(out.glob(".staging-*")) and not list(out.rglob("*.tmp"))


def test_leftovers_of_a_killed_run_are_removed_by_the_next(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".staging-123-456" / "shards").mkdir(parents=True)
    (out / ".staging-123-456" / "shards" / ".shard-000000.tar.x.tmp").write_bytes(b"partial")
    corpus = open_corpus(CorpusSpec(kind="shards", path=str(small_corpus)), tmp_path / "c")
    run_dedup(corpus, DedupParams(), out_dir=out, cache=Cache(tmp_path / "c"))
    assert not list(out.glob(".staging-*"))


def test_two_runs_sharing_one_cache_both_succeed(small_corpus: Path, tmp_path: Path) -> None:
    for trial in range(2):  # each trial races two fresh runs for every entry of an empty cache
        cache = tmp_path / f"cache{trial}"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dedup",
                    "corpus=shards",
                    f"corpus.path={small_corpus}",
                    f"output={tmp_path / f'o{trial}{i}'}",
                    f"cache_dir={cache}",
                ],
                cwd=tmp_path,
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        results = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [r[1][-1500:] for r in results]
        manifests = [pq.read_table(tmp_path / f"o{trial}{i}" / "manifest.parquet") for i in range(2)]
        # NaN similarities render as NaN in JSON, so equal tables give equal text (Table.equals says NaN != NaN).
        assert json.dumps(manifests[0].to_pylist()) == json.dumps(manifests[1].to_pylist())


BAD_CONFIGS = [
    ("dedup.image.threshold=1.5", "dedup.image.threshold"),
    ("dedup.image.index.k=0", "dedup.image.index.k"),
    ("dedup.shard_size=0", "dedup.shard_size"),
    ("limits.max_pixels=-1", "limits.max_pixels"),
    ("limits.min_side=-2", "limits.min_side"),
    ("dedup.image.kind=foo", "dedup.image.kind"),
    ("dedup.image.index.kind=foo", "dedup.image.index.kind"),
    ("dedup.caption.num_perm=0", "dedup.caption.num_perm"),
    ("dedup.image.kind=clip", "dedup.image.weights"),
    ("policy=foo", "dedup.policy"),
    ("+policy=foo", "dedup.policy"),
    ("corpus=shards", "corpus.path"),
    ("dedup.image.threshold=abc", "dedup.image.threshold"),
    ("dedup.policy=foo", "dedup.policy"),
    ("dedup.image.threshold=nan", "dedup.image.threshold"),
    ("dedup.image.index.min_sim=nan", "dedup.image.index.min_sim"),
    ("dedup.semdedup.epsilon=nan", "dedup.semdedup.epsilon"),
    ("dedup.caption.lsh_threshold=nan", "dedup.caption.lsh_threshold"),
    ("dedup.image.assign_margin=inf", "dedup.image.assign_margin"),
    ("corpus.caption_field=''", "corpus.caption_field"),
]


@pytest.mark.parametrize(("override", "key"), BAD_CONFIGS)
def test_bad_config_is_one_line_and_exit_2_before_any_work(override: str, key: str, tmp_path: Path) -> None:
    proc = _dedup_cli(override, f"output={tmp_path / 'o'}", f"cache_dir={tmp_path / 'c'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "c" / "map").exists()  # nothing was read


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_member_bytes"):
        Limits(max_member_bytes=0)


@pytest.mark.slow
def test_fuzz_decoder_and_reader_for_a_minute_without_escapes(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fuzz_decode.py"), "--seconds", "30", "--seed", "0", "--out", str(out)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["decoder"]["escapes"] == 0 and report["reader"]["escapes"] == 0, report
    assert report["decoder"]["inputs"] > 10_000


def test_training_or_audit_without_heldout_is_a_one_line_error(small_corpus: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "train", "corpus=shards", f"corpus.path={small_corpus}", f"cache_dir={tmp_path / 'c'}"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2 and "corpus.heldout" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
