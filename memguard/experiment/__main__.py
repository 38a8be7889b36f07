"""``python -m memguard.experiment [+experiment=NAME]`` (also ``python -m train ...``): the main job — dedup, train
each arm, extract, report. Hydra stops here; the rest takes plain types."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from memguard.common.config import ConfigError, build, check_keys
from memguard.common.errors import one_line_errors
from memguard.configs.registry import ALL_GROUPS, leaf_paths, register, run_entry
from memguard.corpus.spec import check_outside_input, open_corpus
from memguard.dedup.config import corpus_spec, dedup_params, limits
from memguard.dedup.executor import ExecutorConfig
from memguard.diffusion.models import ModelConfig
from memguard.experiment.report import console_summary, write_report
from memguard.experiment.run import ExperimentSpec, run_experiment
from memguard.extract.config import AuditConfig
from memguard.train.config import TrainConfig
from memguard.train.mitigations import MitigationConfig

os.environ.setdefault("WDS_SECURE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
log = logging.getLogger("train")


def spec_from(values: dict[str, Any]) -> ExperimentSpec:
    arms = values["arms"]
    if not isinstance(arms, list) or not all(isinstance(a, str) for a in arms):
        raise ConfigError(f"arms: expected a list of arm names, got {arms!r}")
    try:
        return ExperimentSpec(
            name=str(values["name"]),
            arms=tuple(arms),
            dedup=dedup_params(values["dedup"]),
            model=build(ModelConfig, values["model"], "model"),
            train=build(TrainConfig, values["train"], "train"),
            audit=build(AuditConfig, values["extract"], "extract"),
            mitigation=build(MitigationConfig, values["mitigation"], "mitigation"),
            executor=build(ExecutorConfig, values["executor"], "executor"),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err


register(ALL_GROUPS)
TOP_LEVEL = {"cache_dir", "output", "name", "arms", "seed", *ALL_GROUPS}


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors("train"):  # configuration mistakes before any work; then the run itself
        values: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
        check_keys(values, TOP_LEVEL, lambda: leaf_paths(ALL_GROUPS))
        spec = spec_from(values)
        cache_dir = Path(values["cache_dir"])
        out = Path(values["output"])
        corpus_values = corpus_spec(values["corpus"])
        check_outside_input(corpus_values, output=out, cache_dir=cache_dir)
        corpus = open_corpus(corpus_values, cache_dir, limits(values["limits"]))
        if not corpus.heldout:  # membership inference needs images the model never saw
            raise ConfigError("corpus.heldout is required: shards never trained on, for membership inference")
        metrics = run_experiment(spec, corpus, out_dir=out, cache_dir=cache_dir)
        if metrics:  # empty on the non-main processes of a multi-GPU launch
            command = "python -m train " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
            write_report(out, metrics, command=command, config_yaml=OmegaConf.to_yaml(cfg, resolve=True))
            print(console_summary(metrics, out))


def run() -> None:
    """``python -m memguard.experiment`` / ``python -m train``: check the overrides, then hand over to Hydra."""
    run_entry("train", main, top_level=TOP_LEVEL, groups=ALL_GROUPS)


if __name__ == "__main__":
    run()
