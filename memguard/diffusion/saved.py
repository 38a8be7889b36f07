"""Saved models are folders that diffusers loads as they are, plus ``memguard.json`` for ``load_model``:

- ``unet_uncond`` → a ``DDPMPipeline`` folder (``DiffusionPipeline.from_pretrained``);
- ``unet_text`` → a ``MiniLMTextToImagePipeline`` folder: unet, scheduler, the MiniLM text encoder and
  tokenizer, and the pipeline's own code (``memguard_text_pipeline.py``, named in ``model_index.json``),
  so ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` loads it with diffusers alone
  (diffusers asks for ``trust_remote_code`` before running a pipeline's own code, even a local one);
- ``sd_finetune`` → a ``StableDiffusionPipeline`` folder: the trained UNet (full fine-tune), or the base
  UNet plus ``pytorch_lora_weights.safetensors`` in diffusers' LoRA format (``pipe.load_lora_weights``).

Unchanged components (VAE, text encoders, tokenizers, the LoRA base UNet) are hard links to the base
model's files where the file system allows, copies otherwise: a fine-tune of a 4 GB model does not write
4 GB again. Weights are safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel
from safetensors import SafetensorError

from memguard.common.config import ConfigError, build
from memguard.common.minilm import minilm_path
from memguard.diffusion import text_pipeline
from memguard.diffusion.models import DiffusionModel, ModelConfig, _load_stable_diffusion
from memguard.diffusion.text import CaptionEncoder

CONFIG_FILE = "memguard.json"
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' name: load_lora_weights(folder) finds it
TEXT_PIPELINE_MODULE = "memguard_text_pipeline"
SD_COMPONENTS = ("vae", "text_encoder", "tokenizer", "safety_checker", "feature_extractor")


def link_file(source: Path, target: Path) -> None:
    """Hard-link ``source`` as ``target`` (a copy where links are impossible: another file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def link_tree(source: Path, target: Path) -> None:
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        link_file(path, target / path.relative_to(source))


def _write_index(folder: Path, class_name: str | list[str], components: dict[str, Any]) -> None:
    index = {"_class_name": class_name, "_diffusers_version": diffusers.__version__, **components}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def save_model(model: DiffusionModel, folder: str | Path, unet: torch.nn.Module | None = None) -> Path:
    """Write the model (``unet`` overrides the weights, e.g. the EMA copy) as a diffusers pipeline folder
    plus memguard.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net: Any = unet if unet is not None else model.unet
    kind = model.config.kind
    if kind == "unet_uncond":
        from diffusers import DDPMPipeline

        pipeline: Any = DDPMPipeline(unet=net, scheduler=model.scheduler)
        pipeline.save_pretrained(folder, safe_serialization=True)
    elif kind == "unet_text":
        _save_text_model(model, folder, net)
    else:
        _save_stable_diffusion(model, folder, net)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(model.config), indent=2))
    return folder


def _save_text_model(model: DiffusionModel, folder: Path, net: Any) -> None:
    net.save_pretrained(folder / "unet", safe_serialization=True)
    model.scheduler.save_pretrained(folder / "scheduler")
    encoder_dir = Path(model.config.text_encoder) if model.config.text_encoder else minilm_path()
    # The sentence-transformers folder holds the BertModel's config and weights at its top level.
    for name in ("config.json", "model.safetensors"):
        link_file(encoder_dir / name, folder / "text_encoder" / name)
    tokenizer = model.text.model[0].tokenizer
    tokenizer.save_pretrained(folder / "tokenizer")
    shutil.copyfile(text_pipeline.__file__, folder / f"{TEXT_PIPELINE_MODULE}.py")
    _write_index(
        folder,
        [TEXT_PIPELINE_MODULE, text_pipeline.MiniLMTextToImagePipeline.__name__],
        {
            "unet": ["diffusers", type(net).__name__],
            "scheduler": ["diffusers", type(model.scheduler).__name__],
            "text_encoder": ["transformers", "BertModel"],
            "tokenizer": ["transformers", type(tokenizer).__name__],
        },
    )


def _save_stable_diffusion(model: DiffusionModel, folder: Path, net: Any) -> None:
    base = Path(str(model.config.pretrained))
    for name in SD_COMPONENTS:
        if (base / name).is_dir():
            link_tree(base / name, folder / name)
    model.scheduler.save_pretrained(folder / "scheduler")
    if model.config.lora_rank > 0:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        link_tree(base / "unet", folder / "unet")
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(net))
        StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
    else:
        net.save_pretrained(folder / "unet", safe_serialization=True)
    index: dict[str, Any] = {}
    if (base / "model_index.json").exists():
        index = json.loads((base / "model_index.json").read_text())
    index = {k: v for k, v in index.items() if not k.startswith("_")}
    index.setdefault("safety_checker", [None, None])
    index.setdefault("feature_extractor", [None, None])
    index.setdefault("requires_safety_checker", False)
    index.update(
        {
            "unet": ["diffusers", "UNet2DConditionModel"],
            "scheduler": ["diffusers", type(model.scheduler).__name__],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": index.get("text_encoder", ["transformers", "CLIPTextModel"]),
            "tokenizer": index.get("tokenizer", ["transformers", "CLIPTokenizer"]),
        }
    )
    _write_index(folder, "StableDiffusionPipeline", index)


def load_model_or_explain(folder: str | Path, device: str = "cpu") -> DiffusionModel:
    """``load_model`` for an entry point: a folder that is not a memguard model, or one whose files are
    missing, corrupt or not what they claim, is a ConfigError naming the folder and what was wrong."""
    if not (Path(folder) / CONFIG_FILE).is_file():
        raise ConfigError(f"model_dir: {folder} is not a model folder saved by memguard (no {CONFIG_FILE})")
    try:
        return load_model(folder, device)
    except ConfigError as err:
        raise ConfigError(f"model_dir: {folder}/{CONFIG_FILE}: {err}") from err
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        # diffusers raises OSError or ValueError for a missing or corrupt component, json a ValueError (its
        # UnicodeDecodeError too), safetensors its own error: none of them is worth a traceback to a user.
        detail = " ".join(str(err).split())[:300]
        raise ConfigError(f"model_dir: {folder} could not be loaded: {type(err).__name__}: {detail}") from err


def load_model(folder: str | Path, device: str = "cpu") -> DiffusionModel:
    """Rebuild a saved model (weights from safetensors only)."""
    folder = Path(folder)
    config = build(ModelConfig, json.loads((folder / CONFIG_FILE).read_text()))
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    if config.kind == "unet_uncond":
        unet = UNet2DModel.from_pretrained(folder / "unet", local_files_only=True)
        return DiffusionModel(config, unet.eval(), scheduler)
    if config.kind == "unet_text":
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
        return DiffusionModel(config, unet.eval(), scheduler, text=CaptionEncoder(config.text_encoder, device))
    # The saved folder is a complete Stable Diffusion folder: load from it, not from the base it came from.
    model = _load_stable_diffusion(config, root=folder)
    if config.lora_rank > 0:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft.utils import set_peft_model_state_dict

        state, _ = StableDiffusionPipeline.lora_state_dict(str(folder), weight_name=LORA_FILE)
        unet_state = convert_unet_state_dict_to_peft(
            {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
        )
        set_peft_model_state_dict(model.unet, unet_state, adapter_name="default")
    return model
