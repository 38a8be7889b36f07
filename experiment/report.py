"""The experiment report: report.md, report.html (figures and extracted generations), plots, and the
console summary."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from common.atomic import atomic_path, write_bytes
from extract.stratify import BUCKETS


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_extraction_by_duplicates(metrics: dict[str, Any], path: Path) -> None:
    """Carlini et al. Fig. 5: share of images extracted per duplicate-count bucket, one bar group per arm."""
    names = [b[2] for b in BUCKETS]
    arms = metrics["arms"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / max(1, len(arms))
    for k, (arm, data) in enumerate(arms.items()):
        table = data["extraction_by_duplicate_count"]
        rates = [table.get(n, {}).get("rate", 0.0) for n in names]
        ax.bar([i + k * width for i in range(len(names))], rates, width, label=arm)
    ax.set_xticks([i + width * (len(arms) - 1) / 2 for i in range(len(names))], names)
    ax.set_xlabel("copies of the image in the raw corpus")
    ax.set_ylabel("share of images extracted")
    ax.legend()
    _save(fig, path)


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
        ]
    ]
    for arm, d in metrics["arms"].items():
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
            ]
        )
    return rows


def write_report(out: Path, metrics: dict[str, Any]) -> None:
    plot_extraction_by_duplicates(metrics, out / "extraction_by_duplicates.png")
    plot_cluster_sizes(metrics, out / "cluster_sizes.png")
    rows = _table(metrics)
    dedup = metrics["dedup"]
    lines = [
        f"# {metrics['experiment']} (seed {metrics['seed']})",
        "",
        f"Dedup: {dedup['input_units']} input units → {dedup['status']}; "
        f"{dedup['clusters_with_duplicates']} clusters with duplicates, largest {dedup['largest_cluster']}; "
        f"vs ground truth precision {dedup['precision']}, recall {dedup['recall']}.",
        "",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows[:1]] + ["|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    red = metrics.get("reduction")
    if red:
        lines += [
            "",
            f"Extracted images: raw {red['raw']}, dedup {red['dedup']} "
            f"(factor {red['factor']}); held-out loss ratio dedup/raw {red['heldout_loss_ratio']}.",
        ]
    lines += [
        "",
        "![extraction by duplicate count](extraction_by_duplicates.png)",
        "![cluster sizes](cluster_sizes.png)",
        "",
    ]
    for arm in metrics["arms"]:
        if (out / "arms" / arm / "extract" / "extracted.png").exists():
            lines.append(f"### {arm}: extracted generations (left) beside their training images (right)")
            lines.append(f"![{arm}](arms/{arm}/extract/extracted.png)")
    lines += ["", "Metric definitions: docs/METRICS.md.", ""]
    write_bytes(out / "report.md", "\n".join(lines).encode())
    write_bytes(out / "report.html", _html(metrics, rows, out).encode())


def _html(metrics: dict[str, Any], rows: list[list[str]], out: Path) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    figures = [
        '<figure><img id="fig-extraction" src="extraction_by_duplicates.png" alt="extraction by duplicate count">'
        "<figcaption>Share of images extracted, by copies in the raw corpus</figcaption></figure>",
        '<figure><img id="fig-clusters" src="cluster_sizes.png" alt="cluster sizes">'
        "<figcaption>Dedup cluster sizes</figcaption></figure>",
    ]
    for arm in metrics["arms"]:
        if (out / "arms" / arm / "extract" / "extracted.png").exists():
            figures.append(
                f'<figure><img class="extracted" src="arms/{arm}/extract/extracted.png" alt="{arm} extracted">'
                f"<figcaption>{html.escape(arm)}: extracted generations beside training images</figcaption>"
                "</figure>"
            )
    red = metrics.get("reduction") or {}
    summary = (
        f"<p id='summary'>Extracted images: raw {red.get('raw')}, dedup {red.get('dedup')}, "
        f"factor {red.get('factor')}.</p>"
        if red
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(metrics['experiment'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border:1px solid #ccc}"
        "img{max-width:720px;image-rendering:pixelated}</style></head><body>"
        f"<h1>{html.escape(metrics['experiment'])} (seed {metrics['seed']})</h1>{summary}"
        f"<table id='arms'><tr>{head}</tr>{body}</table>{''.join(figures)}"
        # Marks how many images decoded, so a headless browser test can check that the figures load.
        "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "document.body.dataset.imagesLoaded=i.filter(x=>x.naturalWidth>0).length+'/'+i.length;});</script>"
        "</body></html>"
    )


def console_summary(metrics: dict[str, Any], out: Path) -> str:
    lines = [f"{metrics['experiment']}: {metrics['seconds']:.0f} s"]
    for arm, d in metrics["arms"].items():
        lines.append(
            f"  {arm:9s} extracted {d['extracted_images']:4d} images "
            f"({d['extracted_duplicated_images']} duplicated in the raw corpus), "
            f"MIA AUC {d['mia_auc']:.3f}, held-out loss {d['heldout_loss']:.4f}"
        )
    cached = [k for k, v in metrics["stages"].items() if v.get("cached")]
    if cached:
        lines.append(f"  reused from cache: {', '.join(cached)}")
    lines.append(f"  report: {out / 'report.html'}")
    return "\n".join(lines)
