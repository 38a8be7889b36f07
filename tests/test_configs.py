"""Config defaults live in the dataclasses: every group composes from them and builds back into them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from memguard.common.config import build
from memguard.configs.registry import register
from memguard.dedup.config import dedup_params, dedup_values
from memguard.dedup.decide.cluster import ClusterRule
from memguard.dedup.params import DedupParams
from memguard.dedup.signals.caption_embed import CaptionSemanticParams
from memguard.dedup.signals.lsh import LshParams, bands_rows
from memguard.diffusion.models import ModelConfig
from memguard.experiment.__main__ import spec_from
from memguard.extract.config import AuditConfig
from memguard.train.config import TrainConfig
from memguard.train.mitigations import MitigationConfig

CONFIGS = Path(__file__).resolve().parents[1] / "memguard" / "configs"


def _compose(overrides: list[str]) -> dict:  # type: ignore[type-arg]
    register()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "cache_dir=/tmp/c", "output=/tmp/o"], return_hydra_config=True)
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def test_default_groups_equal_the_dataclass_defaults() -> None:
    values = _compose([])
    spec = spec_from({**values, "train": {**values["train"], "seed": 0}})
    assert spec.model == ModelConfig()
    assert spec.train == TrainConfig()
    assert spec.audit == AuditConfig()
    assert spec.mitigation == MitigationConfig()
    assert spec.dedup == DedupParams()


@pytest.mark.parametrize(
    ("group", "name", "expected"),
    [
        ("model", "unet_text", {"kind": "unet_text"}),
        ("mitigation", "rt", {"kinds": ("rt",)}),
        ("mitigation", "wen", {"kinds": ("wen",)}),
    ],
)
def test_profiles_are_deltas_on_the_defaults(group: str, name: str, expected: dict) -> None:  # type: ignore[type-arg]
    values = _compose([f"{group}={name}"])
    cls = {"model": ModelConfig, "mitigation": MitigationConfig}[group]
    assert build(cls, values[group]) == cls(**expected)


def test_dedup_vocabulary_round_trips() -> None:
    params = DedupParams(
        lsh=LshParams(threshold=0.6, bands=16, rows=8),
        caption_semantic=CaptionSemanticParams(enabled=True, floor=0.8),
        rule=ClusterRule(caption_threshold=0.8, caption_semantic_threshold=0.95),
        policy="reweight",
    )
    assert dedup_params(dedup_values(params)) == params
    assert dedup_params(dedup_values(DedupParams())) == DedupParams()


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown"):
        build(TrainConfig, {"stepz": 3})


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.9])
def test_lsh_bands_are_datasketchs_choice(threshold: float) -> None:
    from datasketch.lsh import _optimal_param  # private: used here only to check our public-API route

    assert bands_rows(LshParams(threshold=threshold), 128) == _optimal_param(threshold, 128, 0.5, 0.5)
