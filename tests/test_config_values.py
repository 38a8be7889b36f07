"""Every float setting refuses NaN and ±inf: NaN passes every comparison, so it would silently switch a
threshold off (20 known copies → 0 found). One sweep over every float field of every config group."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from memguard.common.config import ConfigError, build, in_range
from memguard.configs.registry import ALL_GROUPS, group_defaults
from memguard.dedup.config import corpus_spec, dedup_params, limits
from memguard.dedup.executor import ExecutorConfig
from memguard.diffusion.models import ModelConfig
from memguard.extract.config import AuditConfig
from memguard.train.config import TrainConfig
from memguard.train.mitigations import MitigationConfig

BUILDERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "corpus": corpus_spec,
    "dedup": dedup_params,
    "limits": limits,
    "executor": lambda v: build(ExecutorConfig, v, "executor"),
    "model": lambda v: build(ModelConfig, v, "model"),
    "train": lambda v: build(TrainConfig, v, "train"),
    "mitigation": lambda v: build(MitigationConfig, v, "mitigation"),
    "extract": lambda v: build(AuditConfig, v, "extract"),
}


def _float_leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], bool]]:
    """(path, is a list) of every float-valued leaf, and of every list of floats."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _float_leaves(value, (*path, key))
    elif isinstance(node, float):
        yield path, False
    elif isinstance(node, list) and node and all(isinstance(v, float) for v in node):
        yield path, True


def _with(values: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    if len(path) == 1:
        return {**values, path[0]: value}
    return {**values, path[0]: _with(values[path[0]], path[1:], value)}


FLOAT_FIELDS = [
    (group, path, is_list)
    for group in ALL_GROUPS
    for path, is_list in _float_leaves(group_defaults(group))
]


def test_the_sweep_covers_the_thresholds_the_issue_names() -> None:
    names = {".".join((g, *p)) for g, p, _ in FLOAT_FIELDS}
    assert {"dedup.image.threshold", "dedup.image.assign_margin", "dedup.image.index.min_sim",
            "dedup.semdedup.epsilon", "dedup.caption.lsh_threshold", "train.lr", "extract.delta"} <= names  # fmt: skip
    assert len(FLOAT_FIELDS) > 30


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("group", "path", "is_list"), FLOAT_FIELDS, ids=lambda x: ".".join(x) if isinstance(x, tuple) else str(x))
def test_every_float_setting_refuses_non_finite_values(group: str, path: tuple[str, ...], is_list: bool, bad: float) -> None:
    defaults = group_defaults(group)
    BUILDERS[group](defaults)  # the defaults themselves build
    value: Any = [bad] if is_list else bad
    with pytest.raises(ConfigError, match="finite"):
        BUILDERS[group](_with(defaults, path, value))


def test_in_range_refuses_nan_even_without_bounds() -> None:
    with pytest.raises(ConfigError, match="finite"):
        in_range("x", float("nan"))
    in_range("x", 0.5, lo=0.0, hi=1.0)


@pytest.mark.parametrize("field", ["", "  "])
def test_an_empty_caption_field_is_an_error(field: str) -> None:
    with pytest.raises(ConfigError, match="caption_field"):
        corpus_spec({**group_defaults("corpus"), "caption_field": field})
