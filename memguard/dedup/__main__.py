"""``python -m dedup``: prepare a cleaner dataset. Hydra stops here; everything below takes plain types."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from memguard.common.cache import Cache
from memguard.common.config import build, check_keys
from memguard.common.errors import one_line_errors
from memguard.configs.registry import DEDUP_GROUPS, leaf_paths, register, run_entry
from memguard.corpus.spec import check_outside_input, open_corpus
from memguard.dedup.config import corpus_spec, dedup_params, limits
from memguard.dedup.executor import ExecutorConfig
from memguard.dedup.pipeline import run_dedup
from memguard.dedup.report import console_summary

os.environ.setdefault("WDS_SECURE", "1")  # webdataset must never unpickle members
log = logging.getLogger("dedup")


register(DEDUP_GROUPS)
TOP_LEVEL = {"cache_dir", "output", *DEDUP_GROUPS}


@hydra.main(config_path="../configs", config_name="dedup", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors("dedup"):  # configuration mistakes before any work; then the run itself
        values: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
        check_keys(values, TOP_LEVEL, lambda: leaf_paths(DEDUP_GROUPS))
        params = dedup_params(values["dedup"])
        cache_dir = Path(values["cache_dir"])
        spec = corpus_spec(values["corpus"])
        check_outside_input(spec, output=values["output"], cache_dir=cache_dir)
        corpus = open_corpus(spec, cache_dir, limits(values["limits"]))
        executor = build(ExecutorConfig, values["executor"], "executor")
        result = run_dedup(corpus, params, out_dir=values["output"], cache=Cache(cache_dir), executor=executor)
        print(console_summary(result.stats, result.out_dir))


def run() -> None:
    """``python -m dedup``: check the overrides, then hand over to Hydra."""
    run_entry("dedup", main, top_level=TOP_LEVEL, groups=DEDUP_GROUPS)


if __name__ == "__main__":
    run()
