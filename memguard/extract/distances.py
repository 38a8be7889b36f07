"""Carlini et al.'s image distances, batched and chunked (on the GPU when present).

- ``l2``: root-mean-square pixel difference over [0, 1] pixels, ``sqrt(mean((a - b)²))``;
- ``normalized_l2``: ℓ2 to the nearest training image divided by α × the mean ℓ2 to the n nearest
  (α = 0.5, n = 50): ≈ 1.2–2 for a normal generation, ≈ 0.1–0.3 for a memorized one. With ``groups``
  (one id per training image, copies of one image share an id) each group counts once: its distance is
  that of its closest copy. Carlini's n nearest must be n *different* images — with 64 copies of an
  image in the training set the 50 nearest would otherwise all be that image and the ratio meaningless —
  while the model may have learned any of the copies (crops, re-encodes), so the closest one is used;
- ``tiled_l2``: split both images into a g×g grid of tiles, ℓ2 per tile, the max over tiles.
"""

from __future__ import annotations

import numpy as np
import torch


def _device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _flat(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Pixels centred on 0 (in [-0.5, 0.5]): smaller norms, less cancellation in |a|² + |b|² − 2ab.
    float64 on the CPU, where it costs little, so that identical images come out at 0, not 1e-4."""
    dtype = torch.float32 if device.type == "cuda" else torch.float64
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).reshape(len(images), -1).to(dtype)
    return x / 255.0 - 0.5


def _l2_block(at: torch.Tensor, bt: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """ℓ2 between flat rows ``at`` and ``bt`` (``b_sq``: bt's squared norms), float32, on their device."""
    d2 = ((at**2).sum(1, keepdim=True) + b_sq[None, :] - 2.0 * at @ bt.T).clamp_min(0) / bt.shape[1]
    return d2.sqrt().float()


def pairwise_l2(a: np.ndarray, b: np.ndarray, *, chunk: int = 1024, device: str | None = None) -> np.ndarray:
    """ℓ2 between every image of ``a`` and every image of ``b`` (uint8 NHWC, same shape): (len(a), len(b))."""
    dev = _device(device)
    bt = _flat(b, dev)
    b_sq = (bt**2).sum(1)
    out = np.empty((len(a), len(b)), dtype=np.float32)
    for lo in range(0, len(a), chunk):
        out[lo : lo + chunk] = _l2_block(_flat(a[lo : lo + chunk], dev), bt, b_sq).cpu().numpy()
    return out


def l2(a: np.ndarray, b: np.ndarray) -> float:
    """ℓ2 of two single images (uint8 HWC)."""
    x, y = a.astype(np.float64) / 255.0, b.astype(np.float64) / 255.0
    return float(np.sqrt(((x - y) ** 2).mean()))


def normalized_l2(
    generated: np.ndarray,
    training: np.ndarray,
    *,
    alpha: float = 0.5,
    n: int = 50,
    chunk: int = 512,
    device: str | None = None,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, nearest training index — or group id with ``groups`` —, ℓ2 to it) per generation;
    score = ℓ2_min / (α · mean of the n smallest)."""
    dev = _device(device)
    group_ids = torch.from_numpy(np.asarray(groups, dtype=np.int64)).to(dev) if groups is not None else None
    if group_ids is not None and len(group_ids) != len(training):
        raise ValueError(f"{len(group_ids)} group ids for {len(training)} training images")
    n_groups = int(group_ids.max()) + 1 if group_ids is not None and len(group_ids) else len(training)
    k = min(n, n_groups)
    # The training set is flattened once and every chunk's distances stay on the device: only the k
    # smallest per generation come back (on a GPU the full distance rows would cross the bus each chunk).
    bt = _flat(training, dev)
    b_sq = (bt**2).sum(1)
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for lo in range(0, len(generated), chunk):
        d = _l2_block(_flat(generated[lo : lo + chunk], dev), bt, b_sq)
        if group_ids is not None:
            per_group = torch.full((len(d), n_groups), float("inf"), dtype=d.dtype, device=dev)
            d = per_group.scatter_reduce(1, group_ids.expand(len(d), -1), d, reduce="amin")
        small, idx = d.topk(k, dim=1, largest=False)
        parts.append((small[:, 0] / (alpha * small.mean(1)).clamp_min(1e-12), idx[:, 0], small[:, 0]))
    if not parts:
        return np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.float32)
    scores, nearest, dmin = (torch.cat(column).cpu().numpy() for column in zip(*parts, strict=True))
    return scores, nearest, dmin


def tiles(images: np.ndarray, grid: int) -> np.ndarray:
    """(N, H, W, C) → (N, grid·grid, H/grid · W/grid · C), row-major tiles."""
    n, h, w, c = images.shape
    if h % grid or w % grid:
        raise ValueError(f"image size {h}x{w} is not divisible into a {grid}x{grid} grid")
    t = images.reshape(n, grid, h // grid, grid, w // grid, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(n, grid * grid, -1)


def tiled_l2(a: np.ndarray, b: np.ndarray, grid: int = 4) -> np.ndarray:
    """Max over tiles of the per-tile ℓ2, between every image of ``a`` and of ``b``: (len(a), len(b))."""
    ta, tb = tiles(a, grid) / 255.0 - 0.5, tiles(b, grid) / 255.0 - 0.5  # float64, centred (see _flat)
    worst = np.zeros((len(a), len(b)))
    for j in range(ta.shape[1]):
        x, y = ta[:, j], tb[:, j]
        d2 = ((x**2).sum(1)[:, None] + (y**2).sum(1)[None, :] - 2.0 * x @ y.T).clip(min=0) / x.shape[1]
        worst = np.maximum(worst, np.sqrt(d2))
    return worst
