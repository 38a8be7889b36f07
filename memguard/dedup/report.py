"""The short console summary of a dedup run."""

from __future__ import annotations

from typing import Any


def console_summary(stats: dict[str, Any], out_dir: str) -> str:
    status = stats.get("status", {})
    info = stats.get("corpus", {}).get("info", {})
    lines = [
        f"dedup: {stats['input_units']} input units, {stats['valid_samples']} valid samples"
        + (f" ({info['injected_copies']} injected copies)" if "injected_copies" in info else ""),
        f"  kept {status.get('kept', 0)}, duplicate {status.get('duplicate', 0)}, rejected {status.get('rejected', 0)}"
        f" (policy {stats['policy']})",
    ]
    params = stats.get("params", {})
    if params and not params.get("caption_enabled", True):
        rule = params.get("rule", {})
        lines.append(
            f"  image-only: captions ignored; duplicates are identical pixels or image similarity >= {rule.get('image_threshold')}"
        )
    skipped = info.get("skipped_inputs", [])
    if skipped:
        shown = "; ".join(f"{s['path']} ({s['why']})" for s in skipped[:3])
        lines.append(
            f"  skipped {len(skipped)} files that are not shards: {shown}" + (" ..." if len(skipped) > 3 else "")
        )
    if stats.get("rejected_by_reason"):
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats["rejected_by_reason"].items()))
        lines.append(f"  rejected by reason: {reasons}")
    if stats.get("duplicates_by_signal"):
        lines.append(
            "  duplicates by signal: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["duplicates_by_signal"].items()))
        )
    lines.append(f"  clusters with duplicates: {stats['clusters_with_duplicates']}, largest {stats['largest_cluster']}")
    if "evaluation" in stats:
        inj = stats["evaluation"]["injected"]
        lines.append(
            f"  vs ground truth (injected copies): precision {inj['precision']:.3f}, recall {inj['recall']:.3f},"
            f" F1 {inj['f1']:.3f}; cluster purity {stats['evaluation']['cluster_purity']:.3f}"
        )
    cached = [k for k, v in stats.get("steps", {}).items() if v.get("cached")]
    if cached:
        lines.append(f"  reused from cache: {', '.join(cached)}")
    seconds = sum(float(v.get("seconds", 0)) for v in stats.get("steps", {}).values())
    images = stats.get("corpus", {}).get("kind") != "embeddings"  # an embedding corpus has no contact sheet
    written = "manifest.parquet, removals.parquet, stats.json" + (", contact_sheet.png" if images else "")
    written += ", shards/" if stats.get("shards_written") else ""
    lines.append(f"  {seconds:.1f} s; outputs in {out_dir} ({written})")
    return "\n".join(lines)
