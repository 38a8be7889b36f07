"""The experiment report from a metrics dict: what a researcher needs to read and rerun a run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from memguard.experiment.report import mia_notes, reduction_text, write_report
from memguard.extract.stratify import BUCKETS


def _arm(extracted: list[int], images: list[int], auc: float, samples: int, delta: dict[str, int]) -> dict[str, Any]:
    table = {
        b[2]: {"extracted": e, "images": n, "rate": e / n} for b, e, n in zip(BUCKETS, extracted, images, strict=True)
    }
    return {
        "training_samples": samples,
        "extracted_images": sum(extracted),
        "extracted_duplicated_images": sum(extracted[1:]),
        "extraction_by_duplicate_count": table,
        "extracted_images_by_delta": delta,
        "mia_auc": auc,
        "mia_tpr_at_1pct_fpr": 0.02,
        "heldout_loss": 0.4,
        "copy_similarity": {"p95": 0.9},
    }


def _metrics() -> dict[str, Any]:
    images = [921, 138, 22, 7, 6, 6, 6, 20][: len(BUCKETS)]
    return {
        "experiment": "dedup",
        "seed": 0,
        "dedup": {
            "input_units": 2000,
            "status": {"kept": 1100},
            "clusters_with_duplicates": 50,
            "largest_cluster": 128,
            "cluster_size_histogram": {"1": 1000, "128": 20},
            "precision": 1.0,
            "recall": 1.0,
        },
        "arms": {
            "raw": _arm([0, 1, 2, 3, 1, 2, 4, 4][: len(BUCKETS)], images, 0.61, 3700, {"0.15": 17, "0.3": 25}),
            "dedup": _arm([0] * len(BUCKETS), images, 0.76, 1100, {"0.15": 0, "0.3": 1}),
        },
        "reduction": {"raw": 17, "dedup": 0, "factor": None, "heldout_loss_ratio": 0.94},
    }


def test_reduction_is_written_without_dividing_by_zero() -> None:
    assert reduction_text({"raw": 17, "dedup": 0}) == "≥ 17× (dedup 0)"
    assert reduction_text({"raw": 17, "dedup": 2}) == "8.5×"
    assert reduction_text({"raw": 0, "dedup": 0}) == "no training image extracted in either arm"


def test_report_has_the_command_config_buckets_delta_curve_notes_and_contact_sheet(tmp_path: Path) -> None:
    (tmp_path / "dedup").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "dedup" / "contact_sheet.png")
    metrics = _metrics()
    write_report(tmp_path, metrics, command="python -m train +experiment=dedup", config_yaml="train:\n  seed: 0\n")
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert "Command: `python -m train +experiment=dedup`" in md and "id='command'" in page
    assert "reduction ≥ 17× (dedup 0)" in md and "None" not in md
    assert "seed: 0" in md and "<pre id='config'>" in page
    assert "extraction_by_delta.png" in md and "dedup/contact_sheet.png" in md
    notes = mia_notes(metrics)
    assert len(notes) == 1 and notes[0].startswith("dedup: MIA AUC 0.760 > raw 0.610") and "3.36×" in notes[0]
    assert f"Note — {notes[0]}" in md
    for src in re.findall(r'<img src="([^"]+)"', page):  # every figure the page shows exists
        assert (tmp_path / src).is_file(), src
    assert len(re.findall(r"<img ", page)) == 4


def test_no_delta_figure_or_note_when_there_is_nothing_to_show(tmp_path: Path) -> None:
    metrics = _metrics()
    for arm in metrics["arms"].values():
        arm["extracted_images_by_delta"] = {}
    metrics["arms"]["dedup"]["mia_auc"] = 0.5
    write_report(tmp_path, metrics)
    md = (tmp_path / "report.md").read_text()
    assert "extraction_by_delta" not in md and "Note —" not in md and "Command:" not in md
    assert not (tmp_path / "extraction_by_delta.png").exists()


def test_progress_bars_name_their_arm() -> None:
    from memguard.common.progress import progress_label, progress_scope

    assert progress_label("train") == "train"
    with progress_scope("dedup"):
        assert progress_label("generate") == "dedup: generate"
    assert progress_label("train") == "train"
