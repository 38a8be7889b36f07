"""Model builders from typed arguments: ``unet_uncond``, ``unet_text`` (MiniLM-conditioned), ``sd_finetune``.

A ``DiffusionModel`` bundles what training, sampling and the attacks need: the trainable UNet, the noise
scheduler, and (when present) the VAE and the caption encoder. Saving and loading: ``memguard.diffusion.saved``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel

from memguard.diffusion.text import CaptionEncoder

KINDS = ("unet_uncond", "unet_text", "sd_finetune")


@dataclass(frozen=True)
class ModelConfig:
    """kind: unet_uncond | unet_text | sd_finetune.

    channels/layers_per_block/attention shape the from-scratch UNets (attention: self-attention in the
    lowest-resolution block). pretrained: a local Stable Diffusion folder (sd_finetune). lora_rank: 0 trains
    the full UNet, > 0 trains LoRA adapters (peft) of that rank. text_encoder: MiniLM folder (None: packaged).
    """

    kind: str = "unet_uncond"
    resolution: int = 16
    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: bool = False
    attention_head_dim: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    pretrained: str | None = None
    lora_rank: int = 0
    text_encoder: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "sd_finetune" and not self.pretrained:
            raise ValueError("sd_finetune needs pretrained: a local Stable Diffusion folder (nothing is downloaded)")
        if self.resolution % (2 ** (len(self.channels) - 1)):
            raise ValueError(f"resolution {self.resolution} must be divisible by 2^{len(self.channels) - 1}")


@dataclass
class DiffusionModel:
    config: ModelConfig
    unet: Any  # a diffusers UNet (a torch.nn.Module)
    scheduler: Any  # a diffusers scheduler (DDPMScheduler when built here)
    vae: Any = None
    text: Any = None  # CaptionEncoder for unet_text; (tokenizer, CLIPTextModel) for sd_finetune

    @property
    def conditional(self) -> bool:
        return self.config.kind != "unet_uncond"

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        if self.vae is None:
            return (3, self.config.resolution, self.config.resolution)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (self.vae.config.latent_channels, self.config.resolution // factor, self.config.resolution // factor)

    def to_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] → the space the UNet denoises (identity without a VAE)."""
        if self.vae is None:
            return pixels
        with torch.no_grad():
            latents = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mean
        return latents * self.vae.config.scaling_factor

    def to_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latents
        with torch.no_grad():
            return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    def encode_captions(self, captions: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor | None:
        if not self.conditional:
            return None
        if self.config.kind == "unet_text":
            return self.text.encode(list(captions)).to(device)
        tokenizer, encoder = self.text
        ids = tokenizer(
            list(captions),
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        with torch.no_grad():
            return encoder(ids)[0]

    def null_condition(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
        if not self.conditional:
            return None
        if self.config.kind == "unet_text":
            return self.text.null(batch).to(device)
        return self.encode_captions([""] * batch, device)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to predict: the noise (epsilon) or the velocity (v_prediction)."""
        if self.scheduler.config.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, t)
        return noise

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, *, unet: Any = None) -> torch.Tensor:
        net = unet if unet is not None else self.unet
        if cond is None:
            return net(x_t, t).sample
        return net(x_t, t, encoder_hidden_states=cond.to(x_t.dtype)).sample


def _scheduler(config: ModelConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=True,
    )


def _blocks(n: int, attention: bool, cross: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if cross:  # cross-attention below the top resolution: conditioning where the layout is decided
        down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
        up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
        return down, up
    down = ("DownBlock2D",) * (n - 1) + (("AttnDownBlock2D",) if attention else ("DownBlock2D",))
    up = (("AttnUpBlock2D",) if attention else ("UpBlock2D",)) + ("UpBlock2D",) * (n - 1)
    return down, up


def build_model(config: ModelConfig, device: str = "cpu", seed: int = 0) -> DiffusionModel:
    """A fresh model (``unet_uncond``, ``unet_text``) or one loaded from a local SD folder (``sd_finetune``).
    Initial weights (and LoRA adapters) depend only on ``seed``, not on the process's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(config, device)


def _build(config: ModelConfig, device: str) -> DiffusionModel:
    n = len(config.channels)
    shared: dict[str, Any] = {
        "sample_size": config.resolution,
        "in_channels": 3,
        "out_channels": 3,
        "layers_per_block": config.layers_per_block,
        "block_out_channels": config.channels,
        "attention_head_dim": config.attention_head_dim,
        "norm_num_groups": min(32, config.channels[0]),
    }
    unet: Any
    if config.kind == "unet_uncond":
        down, up = _blocks(n, config.attention, cross=False)
        unet = UNet2DModel(**shared, down_block_types=down, up_block_types=up)
        return DiffusionModel(config, unet, _scheduler(config))
    if config.kind == "unet_text":
        down, up = _blocks(n, config.attention, cross=True)
        text = CaptionEncoder(config.text_encoder, device)
        unet = UNet2DConditionModel(
            **shared,
            down_block_types=down,
            up_block_types=up,
            cross_attention_dim=text.dim,
        )
        return DiffusionModel(config, unet, _scheduler(config), text=text)
    return _load_stable_diffusion(config)


def _load_stable_diffusion(config: ModelConfig, root: Path | None = None) -> DiffusionModel:
    """From ``root`` (default: ``config.pretrained``), a Stable Diffusion folder."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    root = root or Path(str(config.pretrained))
    if not (root / "unet").is_dir():
        raise FileNotFoundError(f"not a Stable Diffusion folder (no unet/): {root}")
    unet = UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(root / "vae", local_files_only=True).requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(root / "text_encoder", local_files_only=True).requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(root / "scheduler", local_files_only=True)
    model = DiffusionModel(config, unet, scheduler, vae=vae, text=(tokenizer, encoder))
    if config.lora_rank > 0:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(
            LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_rank,
                init_lora_weights="gaussian",
                target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            )
        )
    return model


def trainable_parameters(model: DiffusionModel) -> list[torch.nn.Parameter]:
    return [p for p in model.unet.parameters() if p.requires_grad]
