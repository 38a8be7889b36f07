"""``python -m extract model_dir=PATH corpus=...``: audit a saved model. Hydra stops here."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from common.cache import Cache
from common.config import build
from configs.registry import ALL_GROUPS, register
from dedup.config import corpus_spec, dedup_params, limits
from dedup.io.corpus import open_corpus
from dedup.pipeline import run_dedup
from diffusion.images import load_image_set
from diffusion.models import load_model
from extract.audit import audit
from extract.config import AuditConfig
from extract.reference import reference_set

os.environ.setdefault("WDS_SECURE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


register(ALL_GROUPS)


@hydra.main(config_path="../configs", config_name="extract", version_base="1.3")
def main(cfg: DictConfig) -> None:
    values: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    cache_dir = Path(values["cache_dir"])
    out = Path(values["output"])
    model = load_model(values["model_dir"])
    resolution = values["resolution"] or model.config.resolution
    corpus = open_corpus(corpus_spec(values["corpus"]), cache_dir, limits(values["limits"]))
    params = replace(dedup_params(values["dedup"]), policy="remove")
    cleaned = run_dedup(corpus, params, out_dir=out / "dedup", cache=Cache(cache_dir))
    reference = reference_set(cleaned, resolution, corpus.items())
    heldout = load_image_set(corpus.heldout, resolution, cache_dir) if corpus.heldout else None
    metrics = audit(
        model,
        reference,
        heldout=np.asarray(heldout.images) if heldout else reference.images[:0],
        heldout_captions=heldout.captions if heldout else None,
        cfg=build(AuditConfig, values["extract"]),
        out_dir=out,
    )
    print(json.dumps({k: metrics[k] for k in ("attack", "extracted_images", "extracted_duplicated_images")}))
    print(f"membership AUC {metrics['membership']['auc']}; outputs in {out}")


if __name__ == "__main__":
    main()
