"""Checkpoints that survive kills, with no pickle: tensors in safetensors, the rest in JSON.

A checkpoint is written to ``.step-N.partial``, its files hashed into ``state.json``, marked COMPLETE and
then renamed to ``step-N``; only after that are old checkpoints deleted. ``latest_checkpoint`` returns
the newest folder that is complete and whose tensor file matches its recorded hash — never merely the
highest number (a save killed mid-way leaves only a ``.partial`` folder, which is ignored and removed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

MARKER = "COMPLETE"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def partial_folder(root: Path, step: int) -> Path:
    return root / f".step-{step:08d}.partial"


def begin_checkpoint(root: Path, step: int) -> Path:
    """A fresh partial folder for the checkpoint of ``step`` (other writers, e.g. accelerate's
    ``save_state`` in every process, may add to it before ``finish_checkpoint``)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = partial_folder(root, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def save_checkpoint(
    root: Path, step: int, *, tensors: dict[str, torch.Tensor], state: dict[str, Any], keep: int
) -> Path:
    begin_checkpoint(root, step)
    return finish_checkpoint(root, step, tensors=tensors, state=state, keep=keep)


def finish_checkpoint(
    root: Path, step: int, *, tensors: dict[str, torch.Tensor], state: dict[str, Any], keep: int
) -> Path:
    """Write our tensors and state into the partial folder, mark it complete, rename it into place, then
    rotate old checkpoints out."""
    final = root / f"step-{step:08d}"
    tmp = partial_folder(root, step)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
    state = {**state, "step": step, "tensors_sha256": _digest(tmp / "state.safetensors")}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for name in ("state.safetensors", "state.json"):
        with open(tmp / name, "rb") as fh:
            os.fsync(fh.fileno())
    (tmp / MARKER).write_text("")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    complete = sorted(p for p in root.glob("step-*") if (p / MARKER).exists())
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    if not root.exists():
        return None
    for stale in root.glob(".step-*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    for folder in sorted(root.glob("step-*"), reverse=True):
        try:
            state = json.loads((folder / "state.json").read_text())
            if (folder / MARKER).exists() and _digest(folder / "state.safetensors") == state["tensors_sha256"]:
                return folder
        except (OSError, ValueError, KeyError):
            continue
    return None


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return load_file(str(folder / "state.safetensors")), json.loads((folder / "state.json").read_text())


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AdamW state as tensors (safetensors) plus its JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


ACCELERATE_STATE = "accelerate"  # the folder accelerate's save_state writes inside a checkpoint


def training_state(
    unet: torch.nn.Module | None, ema: EMAModel, optimizer: torch.optim.Optimizer | None, *, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The training run's part of a checkpoint: the EMA and the generator always; the model and optimizer unless
    accelerate's ``save_state`` holds them (``None``)."""
    tensors = {f"model.{k}": v for k, v in unet.state_dict().items()} if unet is not None else {}
    tensors.update({f"ema.{i}": p for i, p in enumerate(ema.shadow_params)})
    state: dict[str, Any] = {"ema": {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}}
    if optimizer is not None:
        opt_tensors, state["optimizer"] = optimizer_to_flat(optimizer)
        tensors.update(opt_tensors)
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    return tensors, state


def restore_training_state(
    folder: Path, unet: torch.nn.Module, ema: EMAModel, *, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> dict[str, Any]:
    """Everything of our format; in accelerate's, the model and optimizer are loaded after ``prepare``."""
    tensors, state = load_checkpoint(folder)
    if "optimizer" in state:
        unet.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer_from_flat(optimizer, tensors, state["optimizer"])
    shadow = [tensors[f"ema.{i}"] for i in range(len(ema.shadow_params))]
    ema.load_state_dict({**state["ema"], "shadow_params": shadow})
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return state
