"""Sampling (DDIM) and per-sample denoising losses, shared by training (sample grids, held-out loss) and
the extraction stage (generations, membership inference, Wen's detector).

Every generation ``i`` draws its starting noise from its own generator seeded by ``(seed, i)``, and runs
in a batch of exactly ``batch_size`` rows at row ``i % batch_size`` (unused rows are filled and dropped).
So an image depends only on the model, the seed, its index, its prompt and ``batch_size`` — bitwise, at
any thread count — not on which other indices share its batch, how many, or in which order; an
interrupted generation run resumes with identical images. The shape and the row are fixed because CPU
BLAS and oneDNN choose their kernels and split rows between threads by shape, so the same values at
another batch size, or at another row, can round differently (seen here: one ulp in the time embedding
at row 4 of 6 with two threads), and 50 sampling steps of an untrained network amplify one ulp into a
visibly different image. Callers that compare or cache generations fix ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler
from tqdm import tqdm

from memguard.common.progress import progress_label
from memguard.diffusion.models import DiffusionModel


def noise_for(indices: Sequence[int], shape: tuple[int, ...], seed: int) -> torch.Tensor:
    out = torch.empty((len(indices), *shape))
    for row, index in enumerate(indices):
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
        out[row] = torch.randn(shape, generator=generator)
    return out


def slotted_batches(indices: Sequence[int], batch_size: int) -> list[list[int | None]]:
    """Batches of ``batch_size`` rows, each row the position in ``indices`` it generates (None: unused).
    Index ``i`` always runs at row ``i % batch_size``: the k-th index of that row goes to batch k, so
    contiguous aligned ranges fill whole batches and any other list still keeps every index in its row."""
    batches: list[list[int | None]] = []
    taken: dict[int, int] = {}
    for pos, index in enumerate(indices):
        slot = int(index) % batch_size
        k = taken.get(slot, 0)
        taken[slot] = k + 1
        if k == len(batches):
            batches.append([None] * batch_size)
        batches[k][slot] = pos
    return batches


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW → uint8 NHWC."""
    x = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(
    model: DiffusionModel,
    indices: Sequence[int],
    *,
    seed: int,
    steps: int = 50,
    captions: Sequence[str] | None = None,
    guidance: float = 1.0,
    batch_size: int = 64,
    unet: Any = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    bf16: bool = False,
) -> np.ndarray:
    """Generate one image per index (uint8 NHWC); captions[i] conditions generation i when given. Every
    forward pass has ``batch_size`` rows, index ``i`` at row ``i % batch_size`` (module docstring: why).
    ``bf16``: the network runs under bfloat16 autocast (the GPU profile); the sampler's arithmetic stays
    float32."""
    # Trailing spacing starts at the last training timestep, where x_T ~ N(0, I) really holds; the default
    # (leading) starts earlier, where the image still shows through, and shifts the colours of samples.
    scheduler = DDIMScheduler.from_config(model.scheduler.config, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    net = unet if unet is not None else model.unet
    results: list[tuple[list[int], np.ndarray]] = []
    batches = slotted_batches(indices, batch_size)
    for batch in tqdm(batches, desc=progress_label("generate"), unit="batch", disable=not progress or len(batches) < 2):
        filler = next(pos for pos in batch if pos is not None)  # unused rows: any index of this batch
        rows = [filler if pos is None else pos for pos in batch]
        x = noise_for([indices[pos] for pos in rows], model.latent_shape, seed).to(device)
        cond = null = None
        if captions is not None and model.conditional:
            cond = model.encode_captions([captions[pos] for pos in rows], device)
            null = model.null_condition(batch_size, device)
        autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
        for t in scheduler.timesteps:
            tt = torch.full((batch_size,), int(t), device=device, dtype=torch.long)
            with autocast:
                if cond is None:
                    eps = model.eps(x, tt, None, unet=net)
                elif guidance == 1.0:
                    eps = model.eps(x, tt, cond, unet=net)
                else:
                    assert null is not None
                    both = model.eps(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, null]), unet=net)
                    eps_c, eps_u = both.float().chunk(2)
                    eps = eps_u + guidance * (eps_c - eps_u)
            x = scheduler.step(eps.float(), t, x).prev_sample
        images = to_uint8(model.to_pixels(x))
        used = [slot for slot, pos in enumerate(batch) if pos is not None]
        results.append(([pos for pos in batch if pos is not None], images[used]))
    if not results:
        return np.zeros((0, 0, 0, 3), np.uint8)
    out = np.zeros((len(indices), *results[0][1].shape[1:]), np.uint8)
    for positions, images in results:
        out[positions] = images
    return out


@torch.no_grad()
def denoising_losses(
    model: DiffusionModel,
    pixels: np.ndarray,
    timesteps: Sequence[int],
    *,
    seed: int,
    captions: Sequence[str] | None = None,
    batch_size: int = 256,
    unet: Any = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Per-sample MSE of the noise prediction at each timestep: (N, len(timesteps)). Noise is seeded per
    (sample, timestep), so members and non-members are scored under identical conditions."""
    net = unet if unet is not None else model.unet
    n = len(pixels)
    losses = np.zeros((n, len(timesteps)), dtype=np.float64)
    for lo in range(0, n, batch_size):
        x0 = model.to_latents(torch.from_numpy(np.ascontiguousarray(pixels[lo : lo + batch_size])).to(device))
        cond = model.encode_captions(captions[lo : lo + batch_size], device) if captions is not None else None
        if cond is None and model.conditional:
            cond = model.null_condition(len(x0), device)
        for j, t in enumerate(timesteps):
            noise = noise_for(range(lo, lo + len(x0)), tuple(x0.shape[1:]), seed * 7919 + int(t)).to(device)
            tt = torch.full((len(x0),), int(t), device=device, dtype=torch.long)
            x_t = model.scheduler.add_noise(x0, noise, tt)
            eps = model.eps(x_t, tt, cond, unet=net)
            target = model.target(x0, noise, tt).float()
            losses[lo : lo + len(x0), j] = ((eps.float() - target) ** 2).flatten(1).mean(1).cpu().numpy()
    return losses


@contextmanager
def ema_weights(unet: torch.nn.Module, ema: Any) -> Iterator[torch.nn.Module]:
    """Temporarily swap the EMA weights into ``unet`` (for sample grids and evaluation)."""
    if ema is None:
        yield unet
        return
    params = [p for p in unet.parameters() if p.requires_grad]  # the EMA tracks the trained ones (LoRA: adapters)
    ema.store(params)
    ema.copy_to(params)
    try:
        yield unet
    finally:
        ema.restore(params)


def grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """Tile uint8 NHWC images into one image (white padding)."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    canvas = np.full((rows * (h + 2), columns * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = im
    return canvas
