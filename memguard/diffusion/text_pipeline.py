"""A diffusers pipeline for memguard's caption-conditional UNet (``unet_text``): a frozen MiniLM sentence
encoder (mean-pooled, L2-normalised, one cross-attention token; the null condition is the zero vector)
and a UNet2DConditionModel denoising in pixel space.

This file is self-contained on purpose: ``save_model`` copies it into every ``unet_text`` model folder as
``memguard_text_pipeline.py`` and names it in ``model_index.json``, so that anyone can load the folder
with diffusers alone (no memguard install)::

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("model/", trust_remote_code=True)  # the code is in the folder
    image = pipe("waving hand sign", num_inference_steps=50, guidance_scale=3.0).images[0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from PIL import Image

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


class MiniLMTextToImagePipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet"  # type: ignore[assignment]

    def __init__(self, unet: Any, scheduler: Any, text_encoder: Any, *, tokenizer: Any) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """(B, 1, 384): the sentence embedding sentence-transformers computes for all-MiniLM-L6-v2."""
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        tokens = tokens.to(self.text_encoder.device)
        hidden = self.text_encoder(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)[:, None, :]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        *, generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> Any:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        device = self.unet.device
        size = self.unet.config.sample_size
        shape = (len(prompts), self.unet.config.in_channels, size, size)
        x = latents if latents is not None else torch.randn(shape, generator=generator)
        x = x.to(device, self.unet.dtype)
        cond = self.encode_prompt(prompts).to(device, self.unet.dtype)
        null = torch.zeros_like(cond)
        # DDIM with trailing spacing: the first step starts at the last training timestep.
        scheduler = DDIMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing")
        scheduler.set_timesteps(num_inference_steps)
        for t in self.progress_bar(scheduler.timesteps):
            tt = torch.full((len(prompts),), int(t), device=device, dtype=torch.long)
            if guidance_scale == 1.0:
                eps = self.unet(x, tt, encoder_hidden_states=cond).sample
            else:
                both = self.unet(torch.cat([x, x]), torch.cat([tt, tt]), encoder_hidden_states=torch.cat([cond, null]))
                eps_c, eps_u = both.sample.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            x = scheduler.step(eps, t, x).prev_sample
        pixels = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        images: Any = [Image.fromarray(p) for p in pixels] if output_type == "pil" else np.asarray(pixels)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
