"""Every command the README shows runs as typed (shell quoting included), with a tiny corpus substituted
for the example paths. Dedup and cache commands run to the end in a shell; training and audit commands,
which take minutes, are split as the shell splits them (shlex) and their overrides parsed and composed by
Hydra in this process — the part that broke when quoting was wrong; ``memguard.experiment.compare`` prints its
usage."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import add_member, build_tiny_clip, encode, random_rgb

REPO = Path(__file__).resolve().parents[1]
# A README command starts a Ray instance: with test_ray.py in one pytest-xdist worker (one at a time).
pytestmark = pytest.mark.xdist_group("ray")
TINY = "corpus.twemoji.subset=60 corpus.twemoji.resolution=16"


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        commands += [line for line in block.splitlines() if "python -m" in line]
    commands += re.findall(r"`(python -m [^`]+)`", text.replace("\n", " "))
    out = []
    for line in commands:
        line = re.sub(r"\s+#.*$", "", line).strip()
        line = line.split("&& ", 1)[-1]
        if line.startswith("python -m pytest") or line in out:
            continue
        out.append(line)
    return out


COMMANDS = readme_commands()


def test_the_readme_lists_the_commands_we_expect() -> None:
    assert len(COMMANDS) >= 15
    assert any("corpus.path='/data/laion/{00000..00099}.tar'" in c for c in COMMANDS)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, s3_env: dict[str, str]) -> Path:
    import json
    import tarfile

    from memguard.common.storage import filesystem

    root = tmp_path_factory.mktemp("readme")
    (root / "shards").mkdir()
    for part in range(2):
        with tarfile.open(root / "shards" / f"part-{part}.tar", "w") as tar:
            for i in range(6):
                add_member(tar, f"p{part}s{i}.png", encode(random_rgb(i % 4)))
                add_member(tar, f"p{part}s{i}.txt", f"sample {i % 4}".encode())
    photos = root / "photos" / "a"
    photos.mkdir(parents=True)
    for i in range(3):
        (photos / f"cat{i}.png").write_bytes(encode(random_rgb(10 + i)))
        (photos / f"cat{i}.txt").write_text(f"a cat {i}")
    hf = root / "hf" / "train"  # the Hugging Face imagefolder layout
    hf.mkdir(parents=True)
    with open(hf.parent / "metadata.jsonl", "w") as fh:
        for i in range(3):
            (hf / f"{i}.png").write_bytes(encode(random_rgb(20 + i)))
            fh.write(json.dumps({"file_name": f"train/{i}.png", "text": f"picture {i}"}) + "\n")
    fs, _ = filesystem("s3://bucket")  # the README's object-storage commands run against a local S3 server
    fs.mkdir("bucket")
    for part in range(2):
        fs.put_file(str(root / "shards" / f"part-{part}.tar"), f"bucket/laion/{part:05d}.tar")
    build_tiny_clip(root / "clip")
    # The embedding layout: the shards' samples' vectors (two of them near-duplicates) and their metadata.
    (root / "emb" / "img_emb").mkdir(parents=True)
    (root / "emb" / "metadata").mkdir()
    keys = [f"p{part}s{i}" for part in range(2) for i in range(6)]
    vectors = np.random.default_rng(0).standard_normal((len(keys), 8)).astype(np.float32)
    vectors[1] = vectors[0] + 0.01
    np.save(root / "emb" / "img_emb" / "img_emb_0.npy", vectors, allow_pickle=False)
    metadata = {"key": keys, "url": [f"https://example.org/{k}.png" for k in keys], "caption": ["a picture"] * 12}
    pq.write_table(pa.table(metadata), root / "emb" / "metadata" / "metadata_0.parquet")
    return root


def _as_run_here(command: str, root: Path, n: int) -> str:
    shards = f"'{root}/shards/part-{{0..1}}.tar'"
    swaps = {
        "/data/laion-emb": f"{root}/emb",
        "/data/laion-dedup": f"{root}/out{n}",
        "corpus.path=/data/laion ": f"corpus.path={root}/shards ",
        "'/data/laion/{00000..00099}.tar'": shards,
        "'s3://bucket/laion/{00000..00099}.tar'": "'s3://bucket/laion/{00000..00001}.tar'",
        "/data/hf-imagefolder": f"{root}/hf",
        "'/data/{000..099}.tar'": shards,
        "'/data/heldout/{0..3}.tar'": f"'{root}/shards/part-{{1..1}}.tar'",
        "/data/laion-clean": f"{root}/out{n}",
        "/data/photos-clean": f"{root}/out{n}",
        "/data/photos": f"{root}/photos",
        "/models/clip-vit-b32": f"{root}/clip",
        "/models/sd": f"{root}/sd",
        ".cache/train/<key>/model": f"{root}/model",
        "/shared/memguard-cache": f"{root}/cache",
        # No Ray cluster here: the cluster command joins a local Ray instance of two CPUs instead.
        "executor.address=auto": "executor.workers=2",
    }
    for old, new in swaps.items():
        command = command.replace(old, new)
    if command.startswith("python -m memguard.experiment.compare"):
        return "python -m memguard.experiment.compare --help"
    if command.startswith("python -m dedup"):
        tiny = "" if "corpus=" in command else f" {TINY}"
        sweep = f" hydra.sweep.dir={root}/sweep{n}" if " -m " in command else f" hydra.run.dir={root}/run{n}"
        return f"{command}{tiny} cache_dir={root}/cache{sweep}"
    return command


def _compose_as_typed(command: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from memguard.configs.registry import register

    words = shlex.split(command)  # exactly what the shell hands to Python
    entry, overrides = words[2], [w for w in words[3:] if w != "-m"]
    parsed = OverridesParser.create().parse_overrides(overrides)  # raises on what Hydra cannot parse
    if any(o.is_sweep_override() for o in parsed):
        overrides = [
            o.input_line.split("=", 1)[0] + "=" + o.input_line.split("=", 1)[1].split(",")[0]
            if o.is_sweep_override()
            else o.input_line
            for o in parsed
        ]
    register()
    with initialize_config_dir(str(REPO / "memguard" / "configs"), version_base="1.3"):
        compose(
            {"train": "train", "extract": "extract"}[entry], overrides=[*overrides, "cache_dir=/tmp/c", "output=/tmp/o"]
        )


@pytest.mark.parametrize("n", range(len(COMMANDS)), ids=[c[:60] for c in COMMANDS])
def test_readme_command_runs_as_typed(n: int, inputs: Path, s3_env: dict[str, str]) -> None:
    command = _as_run_here(COMMANDS[n], inputs, n)
    if command.startswith(("python -m train", "python -m extract")):
        _compose_as_typed(command)
        return
    env = {**s3_env, "MEMGUARD_CACHE": str(inputs / "cache"), "HF_HUB_OFFLINE": "1", "WDS_SECURE": "1"}
    proc = subprocess.run(["bash", "-c", command], cwd=inputs, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
