"""Arm names: parsing, the clear errors for misspelt arms, and how ``dedup+best`` picks its mitigation."""

from __future__ import annotations

import pytest

from memguard.experiment.arms import best_kind, mitigation_of, parse_arm, parse_arms
from memguard.train.mitigations import MitigationConfig


def test_arm_names_name_a_corpus_and_mitigations() -> None:
    assert parse_arm("raw").corpus == "raw" and parse_arm("raw").kinds == ()
    assert parse_arm("raw+rt+gni").kinds == ("rt", "gni")
    assert parse_arm("reweight+wen").corpus == "reweight"
    mitigated = parse_arm("mitigated")
    assert mitigated.corpus == "dedup" and mitigated.kinds is None
    assert parse_arm("dedup+best").best


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        (["raw+foo"], "mitigations must be"),
        (["clean"], "corpus part"),
        (["raw+rt+rt"], "distinct"),
        (["raw", "raw"], "distinct names"),
        ([], "non-empty"),
        (["raw", "dedup+best", "raw+rt"], "listed before it"),
        (["raw+rt+gni", "dedup+best"], "listed before it"),  # two mitigations at once is not a candidate
    ],
)
def test_bad_arm_lists_are_clear_errors(arms: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_arms(arms)


def test_best_picks_fewest_extracted_then_lower_loss_among_raw_single_mitigation_arms() -> None:
    arms = parse_arms(["raw", "raw+rt", "raw+gni", "raw+wen", "dedup+rc", "dedup+best"])
    results = {
        "raw": {"extracted_images": 0, "heldout_loss": 0.1},  # no mitigation: never the "best mitigation"
        "raw+rt": {"extracted_images": 3, "heldout_loss": 0.30},
        "raw+gni": {"extracted_images": 2, "heldout_loss": 0.35},
        "raw+wen": {"extracted_images": 2, "heldout_loss": 0.31},
        "dedup+rc": {"extracted_images": 0, "heldout_loss": 0.2},  # not on the raw corpus
    }
    assert best_kind(arms, results) == "wen"
    group = MitigationConfig(kinds=("rc",), p=0.3, wen_tau=0.5)
    chosen = mitigation_of(arms[-1], group, "wen")
    assert chosen.kinds == ("wen",) and chosen.p == 0.3 and chosen.wen_tau == 0.5
    assert mitigation_of(parse_arm("mitigated"), group) is group
    assert mitigation_of(arms[1], group).kinds == ("rt",)
    assert mitigation_of(arms[0], group).kinds == ()
    with pytest.raises(ValueError, match="no mitigation chosen"):
        mitigation_of(arms[-1], group)
