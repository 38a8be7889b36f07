"""The conditional audit's prompts (every duplicated caption plus as many singleton controls) and its
nearest-image criterion, on a hand-built reference set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from memguard.extract.audit import _nearest_l2_summary, audited_prompts
from memguard.extract.config import AuditConfig
from memguard.extract.generations import save_grid
from memguard.extract.reference import Reference


def _reference(counts: list[int]) -> Reference:
    n = len(counts)
    return Reference(
        images=np.zeros((n, 4, 4, 3), np.uint8),
        keys=[f"k{i}" for i in range(n)],
        captions=[f"caption {i}" for i in range(n)],
        dup_counts=np.asarray(counts),
        trained=np.ones(n, bool),
    )


def test_every_duplicated_caption_and_as_many_controls_by_default() -> None:
    reference = _reference([1, 8, 1, 32, 1, 1, 2, 1, 1, 1])
    chosen = audited_prompts(reference, AuditConfig())
    assert chosen[:3] == [3, 1, 6]  # most duplicated first
    controls = chosen[3:]
    assert len(controls) == 3 and len(set(controls)) == 3 and all(reference.dup_counts[i] == 1 for i in controls)
    assert audited_prompts(reference, AuditConfig()) == chosen  # seeded
    capped = audited_prompts(reference, AuditConfig(top_k=1, control_prompts=5))
    assert capped[0] == 3 and len(capped) == 6
    assert len(audited_prompts(_reference([4, 4, 1]), AuditConfig())) == 3  # fewer singletons than wanted


def test_nearest_l2_summary_counts_prompts_within_the_threshold() -> None:
    reference = _reference([32, 32, 8, 1, 1, 1])
    chosen = [0, 1, 2, 3, 4, 5]
    nearest = np.array([0.04, 0.09, 0.2, 0.08, 0.3, 0.25])
    summary = _nearest_l2_summary(reference, chosen, nearest, cfg=AuditConfig(nearest_l2=0.1))
    assert summary["extracted_images"] == 3 and summary["extracted_duplicated_images"] == 2
    assert summary["by_threshold"] == {"0.05": 1, "0.075": 1, "0.1": 3, "0.125": 3, "0.15": 3}
    assert summary["median_duplicated"] == 0.09 and summary["median_control"] == 0.25
    assert summary["by_duplicate_count"]["1"]["extracted"] == 1


def test_generation_grids_are_enlarged_and_labelled(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (10, 8, 8, 3), dtype=np.uint8)
    save_grid(images, tmp_path / "plain.png")
    assert Image.open(tmp_path / "plain.png").size == (8 * 66, 2 * 66)  # 64-px cells, 1-px white borders
    save_grid(images, tmp_path / "labelled.png", [f"x32 caption {i}" for i in range(10)], columns=5)
    labelled = np.asarray(Image.open(tmp_path / "labelled.png"))
    assert labelled.shape[:2] == (2 * (64 + 16), 5 * (96 + 6))
    assert (labelled[64 + 3 : 64 + 14, 3:90] < 128).any()  # the label's text below the first image
