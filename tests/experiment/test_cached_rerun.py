"""A cached rerun of the main job reads no shard: the dedup result, the image sets, the trained models and
the audits are all cache entries, and the per-arm counts and the reference set are products of them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from memguard.corpus.spec import open_corpus
from memguard.dedup.config import corpus_spec, limits
from memguard.experiment.__main__ import spec_from
from memguard.experiment.run import run_experiment
from tests.experiment.test_experiments import REPO, TINY

_opened: list[str] | None = None  # while a list: every path opened in this process (an audit hook)


def _record_opens(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str | bytes | Path):
        _opened.append(str(args[0]))


sys.addaudithook(_record_opens)  # audit hooks cannot be removed: it records only while ``_opened`` is a list


def _without_timing(metrics: dict[str, Any]) -> dict[str, Any]:
    arms = {
        arm: {k: v for k, v in row.items() if k not in ("train_seconds", "images_per_second")}
        for arm, row in metrics["arms"].items()
    }
    return {**{k: v for k, v in metrics.items() if k not in ("stages", "seconds", "peak_rss_mb")}, "arms": arms}


def test_a_cached_rerun_opens_no_tar_and_gives_the_same_metrics(tmp_path: Path, cache_dir: Path) -> None:
    global _opened
    with initialize_config_dir(config_dir=str(REPO / "memguard" / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=dedup", *TINY, f"output={tmp_path}", f"cache_dir={cache_dir}"])
    values: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    spec = spec_from(values)
    corpus = open_corpus(corpus_spec(values["corpus"]), cache_dir, limits(values["limits"]))

    _opened = []
    first = run_experiment(spec, corpus, out_dir=tmp_path / "first", cache_dir=cache_dir)
    first_tars = [p for p in _opened if p.endswith(".tar")]
    _opened = []
    try:
        second = run_experiment(spec, corpus, out_dir=tmp_path / "second", cache_dir=cache_dir)
        second_opens = list(_opened)
    finally:
        _opened = None
    assert first_tars, "the first run must read the shards (else the hook sees nothing)"
    assert [p for p in second_opens if p.endswith(".tar")] == []
    assert all(stage["cached"] for stage in second["stages"].values()), second["stages"]
    assert _without_timing(second) == _without_timing(first)
    assert (tmp_path / "second" / "dedup" / "manifest.parquet").exists()
