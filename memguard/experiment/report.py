"""The experiment report: report.md, report.html (figures and extracted generations), plots, and the
console summary."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from memguard.common.atomic import atomic_path, write_bytes
from memguard.extract.stratify import BUCKETS


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_extraction_by_duplicates(metrics: dict[str, Any], path: Path) -> None:
    """Carlini et al. Fig. 5: share of images extracted per duplicate-count bucket, one bar group per arm;
    each bar says extracted / images, and each bucket how many training images it holds (n)."""
    names = [b[2] for b in BUCKETS]
    arms = metrics["arms"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(1, len(arms))
    counts = {n: 0 for n in names}
    for k, (arm, data) in enumerate(arms.items()):
        table = data["extraction_by_duplicate_count"]
        rates = [table.get(n, {}).get("rate", 0.0) for n in names]
        bars = ax.bar([i + k * width for i in range(len(names))], rates, width, label=arm)
        for bar, n in zip(bars, names, strict=True):
            row = table.get(n, {})
            counts[n] = max(counts[n], int(row.get("images", 0)))
            if row.get("images"):
                ax.annotate(f"{row.get('extracted', 0)}/{row['images']}", (bar.get_x() + bar.get_width() / 2,
                            bar.get_height()), ha="center", va="bottom", fontsize=7)  # fmt: skip
    labels = [f"{n}\n(n={counts[n]})" for n in names]
    ax.set_xticks([i + width * (len(arms) - 1) / 2 for i in range(len(names))], labels)
    ax.set_xlabel("copies of the image in the raw corpus (n: training images in the bucket)")
    ax.set_ylabel("share of images extracted")
    ax.set_ylim(0, 1.12)
    ax.legend()
    _save(fig, path)


def plot_extraction_by_delta(metrics: dict[str, Any], path: Path) -> bool:
    """Extracted images against the threshold, one line per arm: how much the count depends on it —
    Carlini's normalised ℓ2 δ for unconditional audits, the nearest-image ℓ2 for conditional ones.
    False (no figure) when no arm recorded a curve."""
    curves = {arm: d.get("extracted_images_by_delta") or {} for arm, d in metrics["arms"].items()}
    label = "δ (normalised ℓ2 threshold)"
    if not any(curves.values()):
        curves = {arm: (d.get("nearest_l2") or {}).get("by_threshold") or {} for arm, d in metrics["arms"].items()}
        label = "ℓ2 of a prompt's closest generation to its training image (threshold)"
    if not any(curves.values()):
        return False
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for arm, curve in curves.items():
        if curve:
            deltas = sorted(curve, key=float)
            ax.plot([float(d) for d in deltas], [curve[d] for d in deltas], marker="o", label=arm)
    ax.set_xlabel(label)
    ax.set_ylabel("extracted images")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def reduction_text(reduction: dict[str, Any]) -> str:
    """How many times fewer images dedup let the attack extract, without a division by zero."""
    raw, dedup = reduction["raw"], reduction["dedup"]
    if not raw and not dedup:
        return "no training image extracted in either arm"
    if not dedup:
        return f"≥ {raw}× (dedup 0)"
    return f"{raw / dedup:.1f}×"


def mia_notes(metrics: dict[str, Any]) -> list[str]:
    """An arm whose membership-inference AUC is above the raw arm's has not leaked more by accident: with
    the same number of steps over fewer unique images, each image is presented more often."""
    arms = metrics["arms"]
    if "raw" not in arms:
        return []
    raw = arms["raw"]
    notes = []
    for arm, d in arms.items():
        if arm != "raw" and d["mia_auc"] > raw["mia_auc"]:
            per_raw = raw.get("training_samples") or 0
            per_arm = d.get("training_samples") or 0
            ratio = f" ({per_raw / per_arm:.2f}× as many presentations per image)" if per_raw and per_arm else ""
            notes.append(
                f"{arm}: MIA AUC {d['mia_auc']:.3f} > raw {raw['mia_auc']:.3f} — the same training steps over "
                f"{per_arm} instead of {per_raw} samples{ratio}; membership inference measures how well each "
                "training image is fit, not how many near-copies the model can regenerate."
            )
    return notes


def featureless_notes(metrics: dict[str, Any]) -> list[str]:
    """An arm whose extracted images include featureless ones: counted as the attack counts them, but a
    blur of their own colour passes for them, so they are no evidence of memorized detail."""
    notes = []
    for arm, d in metrics["arms"].items():
        flat = d.get("extracted_featureless_images") or 0
        if flat:
            notes.append(
                f"{arm}: {flat} of its {d['extracted_images']} extracted images are featureless "
                f"({', '.join(d.get('featureless_keys', []))}): a plain image of their own mean colour would "
                "nearly pass the test, so a smooth generation counts as a copy without anything memorized "
                "(docs/METRICS.md)."
            )
    return notes


def plot_privacy_utility(metrics: dict[str, Any], path: Path) -> bool:
    """Extracted images against held-out loss, one point per arm (bench/mitigation_study.py adds the seed
    spread). False (no figure) with fewer than three arms, where the table says it all."""
    arms = metrics["arms"]
    if len(arms) < 3:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arm, d in arms.items():
        ax.plot(d["heldout_loss"], d["extracted_images"], "o")
        ax.annotate(arm, (d["heldout_loss"], d["extracted_images"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)  # fmt: skip
    ax.set_xlabel("held-out denoising loss (utility: lower is better)")
    ax.set_ylabel("extracted training images")
    _save(fig, path)
    return True


def plot_cluster_sizes(metrics: dict[str, Any], path: Path) -> None:
    hist = metrics["dedup"]["cluster_size_histogram"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(hist), list(hist.values()))
    ax.set_yscale("log")
    ax.set_xlabel("cluster size")
    ax.set_ylabel("clusters")
    _save(fig, path)


def _table(metrics: dict[str, Any]) -> list[list[str]]:
    rows = [
        [
            "arm",
            "training samples",
            "extracted images",
            "of which duplicated",
            "MIA AUC",
            "TPR@1%FPR",
            "held-out loss",
            "copy sim p95",
            "nearest-ℓ2 extracted",
            "images/s",
        ]
    ]
    for arm, d in metrics["arms"].items():
        nearest = d.get("nearest_l2")
        rows.append(
            [
                arm,
                str(d["training_samples"]),
                str(d["extracted_images"]),
                str(d["extracted_duplicated_images"]),
                f"{d['mia_auc']:.3f}",
                f"{d['mia_tpr_at_1pct_fpr']:.3f}",
                f"{d['heldout_loss']:.4f}",
                str(d["copy_similarity"].get("p95")),
                f"{nearest['extracted_images']} (ℓ2 ≤ {nearest['threshold']})" if nearest else "—",
                f"{d['images_per_second']:.0f}" if d.get("images_per_second") is not None else "—",
            ]
        )
    return rows


def write_report(out: Path, metrics: dict[str, Any], *, command: str = "", config_yaml: str = "") -> None:
    """report.md and report.html beside their figures; ``command`` and ``config_yaml`` (the resolved
    configuration) make the run reproducible from the report alone."""
    plot_extraction_by_duplicates(metrics, out / "extraction_by_duplicates.png")
    plot_cluster_sizes(metrics, out / "cluster_sizes.png")
    has_delta = plot_extraction_by_delta(metrics, out / "extraction_by_delta.png")
    has_tradeoff = plot_privacy_utility(metrics, out / "privacy_utility.png")
    rows = _table(metrics)
    dedup = metrics["dedup"]
    dedup_line = (
        f"Dedup: {dedup['input_units']} input units → {dedup['status']}; "
        f"{dedup['clusters_with_duplicates']} clusters with duplicates, largest {dedup['largest_cluster']}; "
        f"vs ground truth precision {dedup['precision']}, recall {dedup['recall']}."
    )
    red = metrics.get("reduction")
    summary = (
        f"Extracted images: raw {red['raw']}, dedup {red['dedup']} → reduction {reduction_text(red)}; "
        f"held-out loss ratio dedup/raw {red['heldout_loss_ratio']}."
        if red
        else ""
    )
    notes = mia_notes(metrics) + featureless_notes(metrics)
    sheet = out / "dedup" / "contact_sheet.png"
    figures = [
        ("extraction_by_duplicates.png", "Share of images extracted, by copies in the raw corpus (Carlini Fig. 5)"),
        *([("extraction_by_delta.png", "Extracted images against the threshold")] if has_delta else []),
        *(
            [("privacy_utility.png", "Privacy vs utility: extracted images against held-out loss")]
            if has_tradeoff
            else []
        ),
        ("cluster_sizes.png", "Dedup cluster sizes"),
        *(
            [("dedup/contact_sheet.png", "Dedup: the largest clusters, keeper framed green, removed red")]
            if sheet.exists()
            else []
        ),
    ]
    for arm in metrics["arms"]:
        if (out / "arms" / arm / "extract" / "extracted.png").exists():
            figures.append(
                (f"arms/{arm}/extract/extracted.png", f"{arm}: extracted generations beside training images")
            )
        if (out / "arms" / arm / "extract" / "generations.png").exists():
            figures.append((f"arms/{arm}/extract/generations.png", f"{arm}: generations (enlarged; prompts below)"))
    lines = [f"# {metrics['experiment']} (seed {metrics['seed']})", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [dedup_line, ""]
    lines += ["| " + " | ".join(r) + " |" for r in rows[:1]] + ["|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += ["", summary] if summary else []
    lines += ["", *[f"Note — {n}" for n in notes]] if notes else []
    lines += ["", *[f"![{caption}]({src})" for src, caption in figures], ""]
    if config_yaml:
        lines += ["Resolved configuration:", "", "```yaml", config_yaml.rstrip(), "```", ""]
    lines += ["Metric definitions: docs/METRICS.md.", ""]
    write_bytes(out / "report.md", "\n".join(lines).encode())
    write_bytes(out / "report.html", _html(metrics, rows, figures, summary=summary, notes=notes, command=command, config_yaml=config_yaml).encode())


def _html(
    metrics: dict[str, Any],
    rows: list[list[str]],
    figures: list[tuple[str, str]],
    *, summary: str,
    notes: list[str],
    command: str,
    config_yaml: str,
) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    parts = [f"<h1>{esc(metrics['experiment'])} (seed {metrics['seed']})</h1>"]
    if command:
        parts.append(f"<p>Command: <code id='command'>{esc(command)}</code></p>")
    if summary:
        parts.append(f"<p id='summary'>{esc(summary)}</p>")
    parts.append(f"<table id='arms'><tr>{head}</tr>{body}</table>")
    parts += [f"<p class='note'>Note — {esc(n)}</p>" for n in notes]
    parts += [
        f'<figure><img src="{esc(src)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
        for src, caption in figures
    ]
    if config_yaml:
        parts.append(
            f"<details><summary>Resolved configuration</summary><pre id='config'>{esc(config_yaml)}</pre></details>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(metrics['experiment'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border:1px solid #ccc}"
        "img{max-width:720px;image-rendering:pixelated}.note{color:#8a4b00}</style></head><body>"
        + "".join(parts)
        # Marks how many images decoded, so a headless browser test can check that the figures load.
        + "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "document.body.dataset.imagesLoaded=i.filter(x=>x.naturalWidth>0).length+'/'+i.length;});</script>"
        "</body></html>"
    )


def console_summary(metrics: dict[str, Any], out: Path) -> str:
    lines = [f"{metrics['experiment']}: {metrics['seconds']:.0f} s"]
    for arm, d in metrics["arms"].items():
        lines.append(
            f"  {arm:12s} extracted {d['extracted_images']:4d} images "
            f"({d['extracted_duplicated_images']} duplicated in the raw corpus"
            + (f", {d['extracted_featureless_images']} featureless" if d.get("extracted_featureless_images") else "")
            + f"), MIA AUC {d['mia_auc']:.3f}, held-out loss {d['heldout_loss']:.4f}"
        )
    cached = [k for k, v in metrics["stages"].items() if v.get("cached")]
    if cached:
        lines.append(f"  reused from cache: {', '.join(cached)}")
    lines.append(f"  report: {out / 'report.html'}")
    return "\n".join(lines)
