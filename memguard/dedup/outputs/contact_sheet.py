"""A contact sheet of the largest clusters, so a person can see what dedup removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from memguard.common.atomic import atomic_path

KEEPER_COLOUR = (30, 160, 60)
DUPLICATE_COLOUR = (200, 40, 40)


def contact_sheet(rows: list[list[tuple[np.ndarray, bool]]], path: Path, *, thumb: int = 48, per_row: int = 12) -> None:
    """One row per cluster: its keeper (green frame) then duplicates (red frame), up to ``per_row``."""
    if not rows:
        return
    pad = 3
    width = per_row * (thumb + 2 * pad)
    sheet = Image.new("RGB", (width, len(rows) * (thumb + 2 * pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, (rgb, is_keeper) in enumerate(row[:per_row]):
            x, y = c * (thumb + 2 * pad), r * (thumb + 2 * pad)
            colour = KEEPER_COLOUR if is_keeper else DUPLICATE_COLOUR
            draw.rectangle([x, y, x + thumb + 2 * pad - 1, y + thumb + 2 * pad - 1], fill=colour)
            sheet.paste(Image.fromarray(rgb).resize((thumb, thumb), Image.Resampling.BILINEAR), (x + pad, y + pad))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
