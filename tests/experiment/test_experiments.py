"""Smoke tests: every memguard/configs/experiment/*.yaml composes and runs on a tiny budget; the CLI end to end
(+experiment as typed, cache reuse on the second run, compare, the HTML report in headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from memguard.corpus.spec import open_corpus
from memguard.dedup.config import corpus_spec, limits
from memguard.experiment.__main__ import spec_from
from memguard.experiment.report import write_report
from memguard.experiment.run import run_experiment

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (REPO / "memguard" / "configs" / "experiment").glob("*.yaml"))
TINY = [
    "corpus.twemoji.subset=60",
    "corpus.twemoji.resolution=16",
    "corpus.twemoji.injection.fraction=0.1",
    "corpus.twemoji.injection.min_count=4",
    "corpus.twemoji.injection.max_count=8",
    "corpus.twemoji.injection.design_counts=[]",  # the main job's dose design needs more emoji than 60
    "corpus.twemoji.injection.design_images=[]",
    "model.resolution=16",
    "model.channels=[16,32]",
    "model.layers_per_block=1",
    "model.attention=false",
    "train.steps=4",
    "train.batch_size=8",
    "train.checkpoint_every=2",
    "train.sample_every=4",
    "train.sample_count=4",
    "train.sample_steps=2",
    "train.mixed_precision=no",
    "train.fused_adam=false",
    "train.channels_last=false",
    "extract.generations=16",
    "extract.mia_samples=16",
    "extract.top_k=2",
    "extract.control_prompts=2",
    "extract.per_prompt=4",
    "extract.sample_steps=3",
    "extract.wen_generations=2",
    "extract.n_nearest=5",
    "extract.mia_timesteps=[10,100]",
    "extract.batch_size=16",
]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_runs(experiment: str, tmp_path: Path, cache_dir: Path) -> None:
    with initialize_config_dir(config_dir=str(REPO / "memguard" / "configs"), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"+experiment={experiment}", *TINY, f"output={tmp_path}", f"cache_dir={cache_dir}"]
        )
    values = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(values, dict)
    spec = spec_from(values)  # type: ignore[arg-type]
    corpus = open_corpus(corpus_spec(values["corpus"]), cache_dir, limits(values["limits"]))  # type: ignore[index]
    metrics = run_experiment(spec, corpus, out_dir=tmp_path, cache_dir=cache_dir)
    write_report(tmp_path, metrics)
    assert set(metrics["arms"]) == set(spec.arms)
    for arm in spec.arms:
        assert (tmp_path / "arms" / arm / "extract" / "metrics.json").exists()
        train_dir = tmp_path / "arms" / arm / "train"
        assert (train_dir / "model" / "model_index.json").exists() and any((train_dir / "logs").iterdir())
        # The checkpoints (several times the model's size) are gone once the model is saved.
        assert not (train_dir / "model").resolve().parent.joinpath("checkpoints").exists()
    assert (tmp_path / "report.html").exists() and (tmp_path / "extraction_by_duplicates.png").exists()


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_cli_end_to_end_with_cache_reuse_compare_and_html(tmp_path: Path, cache_dir: Path) -> None:
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        proc = _run(
            ["-m", "train", "+experiment=dedup", *TINY, f"cache_dir={cache_dir / 'cli'}", f"hydra.run.dir={out}"], REPO
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "report:" in proc.stdout
        runs.append(out)
    assert "reused from cache" in proc.stdout and "train_raw" in proc.stdout and "extract_dedup" in proc.stdout
    first = json.loads((runs[0] / "metrics.json").read_text())
    second = json.loads((runs[1] / "metrics.json").read_text())
    assert second["arms"]["raw"]["extracted_images"] == first["arms"]["raw"]["extracted_images"]
    assert all(stage["cached"] for stage in second["stages"].values()), second["stages"]
    assert (runs[0] / ".hydra" / "config.yaml").exists()
    compare = _run(["-m", "memguard.experiment.compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "cmp")], REPO)
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert compare.stdout.count("| raw |") == 2 and (tmp_path / "cmp" / "comparison.csv").exists()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chrome'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (runs[0] / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded and loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 2, dom[:2000]
    assert 'id="arms"' in dom and "dedup" in dom


def test_threshold_sweep_as_multirun_and_compare_over_it(tmp_path: Path, cache_dir: Path) -> None:
    sweep = tmp_path / "multi"
    proc = _run(
        [
            "-m",
            "train",
            "-m",
            "+experiment=dedup",
            *TINY,
            "dedup.caption.threshold=0.7,0.9",
            f"cache_dir={cache_dir / 'sweep'}",
            f"hydra.sweep.dir={sweep}",
        ],
        REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").exists()) == ["0", "1"]
    # The second job changes only a threshold: the raw arm's model is the first job's.
    second = json.loads((sweep / "1" / "metrics.json").read_text())
    assert second["stages"]["train_raw"]["cached"]
    compare = _run(["-m", "memguard.experiment.compare", str(sweep), "--out", str(tmp_path / "cmp")], REPO)
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert "dedup.caption.threshold=0.7" in compare.stdout and "dedup.caption.threshold=0.9" in compare.stdout
    assert compare.stdout.count("| raw |") == 2
