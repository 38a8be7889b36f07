"""``python -m dedup``: prepare a cleaner dataset. Hydra stops here; everything below takes plain types."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from common.cache import Cache
from common.config import build, check_keys, disk_full_is_one_line, user_errors
from configs.registry import DEDUP_GROUPS, leaf_paths, precheck_overrides, register
from dedup.config import corpus_spec, dedup_params, limits
from dedup.executor import ExecutorConfig
from dedup.io.corpus import open_corpus
from dedup.pipeline import run_dedup
from dedup.report import console_summary

os.environ.setdefault("WDS_SECURE", "1")  # webdataset must never unpickle members
log = logging.getLogger("dedup")


register(DEDUP_GROUPS)
TOP_LEVEL = {"cache_dir", "output", *DEDUP_GROUPS}


@hydra.main(config_path="../configs", config_name="dedup", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors("dedup"):  # every configuration mistake is reported here, before any work
        values: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
        check_keys(values, TOP_LEVEL, lambda: leaf_paths(DEDUP_GROUPS))
        params = dedup_params(values["dedup"])
        cache_dir = Path(values["cache_dir"])
        corpus = open_corpus(corpus_spec(values["corpus"]), cache_dir, limits(values["limits"]))
        executor = build(ExecutorConfig, values["executor"], "executor")
    with disk_full_is_one_line("dedup"):
        result = run_dedup(corpus, params, out_dir=values["output"], cache=Cache(cache_dir), executor=executor)
    print(console_summary(result.stats, result.out_dir))


if __name__ == "__main__":
    with user_errors("dedup"):
        precheck_overrides(sys.argv[1:], TOP_LEVEL, DEDUP_GROUPS)
    main()
