"""Arm names: which corpus an arm trains on and which training-time mitigations it applies.

An arm is ``CORPUS`` or ``CORPUS+KIND[+KIND...]``. CORPUS is ``raw`` (the corpus as given), ``dedup`` (the
cleaned corpus) or ``reweight`` (every sample, sampled with weight 1/|cluster|); KIND is a mitigation of
memguard/train/mitigations.py (mc, rc, rt, gni, cwr, wen), applied with the ``mitigation`` group's parameters
(p, tokens, gni_scale, wen_tau). Two names are special:

- ``mitigated``: the cleaned corpus with the ``mitigation`` group's own kinds (``+experiment=mitigate``);
- ``dedup+best``: the cleaned corpus with the one mitigation whose ``raw+KIND`` arm, listed before it,
  extracted the fewest images (ties: the lower held-out loss) — "dedup plus the best mitigation" in one run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from memguard.train.mitigations import ALL_KINDS, MitigationConfig

CORPORA = ("raw", "dedup", "reweight")
BEST = "best"


@dataclass(frozen=True)
class Arm:
    name: str
    corpus: str
    kinds: tuple[str, ...] | None  # None: the mitigation group's kinds (the ``mitigated`` arm)
    best: bool = False  # the kind is chosen from the raw+KIND arms run before this one


def parse_arm(name: str) -> Arm:
    if name == "mitigated":
        return Arm(name, "dedup", None)
    corpus, *kinds = name.split("+")
    if corpus not in CORPORA:
        raise ValueError(f"arm {name!r}: the corpus part must be one of {CORPORA} (or the arm 'mitigated')")
    if kinds == [BEST]:
        return Arm(name, corpus, (), best=True)
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or len(set(kinds)) != len(kinds):
        raise ValueError(f"arm {name!r}: mitigations must be distinct names from {ALL_KINDS} or '{BEST}'")
    return Arm(name, corpus, tuple(kinds))


def parse_arms(names: Sequence[str]) -> tuple[Arm, ...]:
    """Every arm parsed; a ``+best`` arm needs at least one single-mitigation raw arm before it."""
    if not names or len(set(names)) != len(names):
        raise ValueError(f"arms must be a non-empty list of distinct names, got {list(names)}")
    arms = tuple(parse_arm(n) for n in names)
    for i, arm in enumerate(arms):
        if arm.best and not candidates(arms[:i]):
            raise ValueError(f"arm {arm.name!r} needs raw+KIND arms (one mitigation each) listed before it")
    return arms


def candidates(arms: Sequence[Arm]) -> list[Arm]:
    """The arms a ``+best`` arm chooses among: the raw corpus with exactly one mitigation."""
    return [a for a in arms if a.corpus == "raw" and a.kinds is not None and len(a.kinds) == 1]


def best_kind(arms: Sequence[Arm], results: Mapping[str, Mapping[str, Any]]) -> str:
    """The mitigation of the candidate arm with the fewest extracted images, then the lower held-out loss."""
    ranked = sorted(
        (results[a.name]["extracted_images"], results[a.name]["heldout_loss"], a.name, a.kinds[0])
        for a in candidates(arms)
        if a.kinds and a.name in results
    )
    if not ranked:
        raise ValueError("no raw+KIND arm has results to choose the best mitigation from")
    return ranked[0][3]


def mitigation_of(arm: Arm, group: MitigationConfig, chosen: str | None = None) -> MitigationConfig:
    """The arm's mitigation: its kinds with the group's parameters (``chosen`` for a ``+best`` arm)."""
    if arm.kinds is None:
        return group
    if arm.best:
        if chosen is None:
            raise ValueError(f"arm {arm.name!r}: no mitigation chosen")
        return replace(group, kinds=(chosen,))
    return replace(group, kinds=arm.kinds)
