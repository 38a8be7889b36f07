"""``python -m extract model_dir=PATH corpus=...``: audit a saved model. Hydra stops here."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from memguard.common.atomic import link_folder
from memguard.common.cache import Cache
from memguard.common.config import ConfigError, build, check_keys
from memguard.common.errors import one_line_errors
from memguard.configs.registry import ALL_GROUPS, leaf_paths, register, run_entry
from memguard.corpus.spec import Corpus, check_outside_input, open_corpus
from memguard.dedup.config import corpus_spec, dedup_params, limits
from memguard.dedup.params import DedupParams
from memguard.dedup.pipeline import cached_dedup
from memguard.diffusion.models import DiffusionModel
from memguard.diffusion.saved import load_model_or_explain
from memguard.extract.audit import audit
from memguard.extract.config import AuditConfig
from memguard.extract.inputs import audit_inputs

os.environ.setdefault("WDS_SECURE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


register(ALL_GROUPS)
GROUPS = ("corpus", "dedup", "limits", "extract")
TOP_LEVEL = {"cache_dir", "output", "model_dir", "resolution", *GROUPS}


@hydra.main(config_path="../configs", config_name="extract", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors("extract"):  # configuration mistakes and a broken model folder before any work
        values: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
        check_keys(values, TOP_LEVEL, lambda: leaf_paths(GROUPS))
        cache_dir = Path(values["cache_dir"])
        out = Path(values["output"])
        params = replace(dedup_params(values["dedup"]), policy="remove")
        cfg_audit = build(AuditConfig, values["extract"], "extract")
        spec = corpus_spec(values["corpus"])
        check_outside_input(spec, output=out, cache_dir=cache_dir)
        corpus = open_corpus(spec, cache_dir, limits(values["limits"]))
        if not corpus.heldout:  # membership inference needs images the model never saw
            raise ConfigError("corpus.heldout is required: shards never trained on, for membership inference")
        model = load_model_or_explain(values["model_dir"])
        _audit_saved_model(model, corpus, params, cfg_audit=cfg_audit, resolution=values["resolution"], out=out,
                           cache_dir=cache_dir)  # fmt: skip


def _audit_saved_model(
    model: DiffusionModel,
    corpus: Corpus,
    params: DedupParams,
    *,
    cfg_audit: AuditConfig,
    resolution: int | None,
    out: Path,
    cache_dir: Path,
) -> None:
    resolution = resolution or model.config.resolution
    cleaned = cached_dedup(corpus, params, cache=Cache(cache_dir))
    link_folder(out / "dedup", Path(cleaned.out_dir))
    inputs = audit_inputs(corpus, cleaned, resolution=resolution, cache_dir=cache_dir)
    assert inputs.heldout is not None  # corpus.heldout was checked with the configuration
    metrics = audit(
        model,
        inputs.reference,
        heldout=inputs.heldout_images,
        heldout_captions=inputs.heldout.captions,
        cfg=cfg_audit,
        out_dir=out,
        embedder=params.embedder,
    )
    print(json.dumps({k: metrics[k] for k in ("attack", "extracted_images", "extracted_duplicated_images")}))
    print(f"membership AUC {metrics['membership']['auc']}; outputs in {out}")


def run() -> None:
    """``python -m extract``: check the overrides, then hand over to Hydra."""
    run_entry("extract", main, top_level=TOP_LEVEL, groups=GROUPS)


if __name__ == "__main__":
    run()
