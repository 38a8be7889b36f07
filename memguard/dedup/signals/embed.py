"""Image embedders behind one small interface; every embedding is L2-normalised (cosine = dot product).

- ``robust``: the offline default — multi-view descriptors that find copies after crops, pads, flips, small
  rotations, overlaid text, greyscale and colour jitter (``memguard/dedup/signals/robust.py``).
- ``pixels``: a downsampled copy of the image, mean-centred, plus its mean colour (fastest; misses
  geometric edits and greyscale).
- ``phash``: imagehash's perceptual hash as ±1 bits (cosine = 1 − 2·Hamming/bits).
- ``clip`` / ``dino``: a transformers model from a local folder (``CLIPModel`` / ``AutoModel``).
- ``sscd``: a TorchScript file (the format the SSCD authors publish).
- ``precomputed``: the vectors an embedding corpus ships (``corpus=embeddings``), single-view; set by the
  pipeline for that corpus kind, never an embedder of images.
Model preprocessing is the weights' own transformers image processor where the folder has one
(``preprocessor_config.json``), else a PIL + numpy resize, centre crop and normalisation — never
torchvision, which would drag a CUDA build of torch in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import imagehash
import numpy as np
from PIL import Image

from memguard.common.config import ConfigError, in_range, one_of
from memguard.dedup.signals.robust import LAYOUT as ROBUST_LAYOUT
from memguard.dedup.signals.robust import LONG_SIDE_CAP, RobustEmbedder
from memguard.dedup.signals.views import SINGLE, ViewLayout

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Embedder(Protocol):
    name: str

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 arrays (H, W, 3) → float32 (N, dim), rows of unit norm (or non-finite on failure)."""
        ...


EMBEDDER_KINDS = ("robust", "pixels", "phash", "clip", "dino", "sscd", "precomputed")
MODEL_KINDS = ("clip", "dino", "sscd")


@dataclass(frozen=True)
class EmbedderParams:
    """How images become vectors for the image signal.

    kind: robust | pixels | phash | clip | dino | sscd (the model kinds need ``weights``: a local folder or
    file; nothing is downloaded). grid: pixels — side of the downsampled grid; phash — hash size (≤ 16);
    robust fixes its own (memguard/dedup/signals/robust.py).
    image_size: input side of the model kinds where the weights do not fix it. device: auto | cpu | cuda.
    """

    kind: str = "robust"
    grid: int = 8
    weights: str | None = None
    image_size: int = 224
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        one_of("dedup.image.kind", self.kind, EMBEDDER_KINDS)
        in_range("dedup.image.grid", self.grid, lo=2, hi=64)
        in_range("dedup.image.image_size", self.image_size, lo=8)
        in_range("dedup.image.batch_size", self.batch_size, lo=1)
        one_of("dedup.image.device", self.device, ("auto", "cpu", "cuda"))
        if self.kind in MODEL_KINDS and not self.weights:
            raise ConfigError(
                f"dedup.image.kind={self.kind} needs dedup.image.weights: a local path to its weights "
                "(nothing is downloaded)"
            )
        if self.weights and not Path(self.weights).exists():
            raise FileNotFoundError(f"dedup.image.weights: {self.weights} does not exist")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x / norms).astype(np.float32)


BRIGHTNESS_ANCHOR = 0.1  # a constant component: the mean colour's magnitude, not only its direction, counts


class PixelEmbedder:
    """Downsampled pixels, mean-centred and unit-scaled (texture), plus the mean colour offset from mid-grey
    and a small constant. Without the constant a flat image's vector is its colour offset alone, and
    normalising keeps only its direction: flat white and flat grey 128 (or grey 127 and black) became the
    same vector. With it, flat images of different brightness or colour stay apart, while the texture
    still dominates the cosine of textured images (the constant adds 0.01 to a squared norm above 1)."""

    name = "pixels"

    def __init__(self, size: int = 16) -> None:
        self.size = size

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, 3 * self.size**2 + 4), np.float32)
        side = (self.size, self.size)
        small = [np.asarray(Image.fromarray(rgb).resize(side, Image.Resampling.BOX)).reshape(-1) for rgb in images]
        # The arithmetic of the batch is row by row what it was image by image (the vectors are
        # bit-identical; the squared norm is each row's own dot product, as np.linalg.norm computes it).
        x = np.stack(small).astype(np.float32) / 255.0
        centred = x - x.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.array([row.dot(row) for row in centred], np.float32))
        flat = norms <= 1e-6
        texture = centred / np.where(flat, np.float32(1), norms)[:, None]
        texture[flat] = 0
        colour = x.reshape(len(x), -1, 3).mean(axis=1) - 0.5
        anchor = np.full((len(x), 1), BRIGHTNESS_ANCHOR)
        return l2_normalise(np.concatenate([texture.astype(np.float64), colour.astype(np.float64), anchor], axis=1))


class PHashEmbedder:
    name = "phash"

    def __init__(self, size: int = 8) -> None:
        self.size = size

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        bits = [imagehash.phash(Image.fromarray(rgb), hash_size=self.size).hash.reshape(-1) for rgb in images]
        if not bits:
            return np.zeros((0, self.size**2), np.float32)
        signs = np.where(np.stack(bits), 1.0, -1.0).astype(np.float32)
        return signs / np.sqrt(signs.shape[1])


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def preprocess(images: Sequence[np.ndarray], *, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Resize the short side to ``size`` (bicubic), centre-crop, scale to [0,1], normalise → NCHW float32."""
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, rgb in enumerate(images):
        im = Image.fromarray(rgb)
        scale = size / min(im.size)
        # Capped like the robust embedder's working copy: a very long image never scales to gigabytes.
        w, h = (min(LONG_SIDE_CAP * size, max(size, round(side * scale))) for side in im.size)
        im = im.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        out[i] = ((arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)
    return out


def _image_processor(weights: str) -> Any:
    """The transformers image processor saved with the weights (``preprocessor_config.json``: resize,
    crop, mean and std as the model was trained), or None. Without torchvision transformers picks its
    PIL/numpy processor."""
    if not (Path(weights) / "preprocessor_config.json").exists():
        return None
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(weights, local_files_only=True)


class TorchEmbedder(ABC):
    """Shared batching for the model embedders; subclasses load ``self.model`` and define ``forward``."""

    name = "torch"
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __init__(self, params: EmbedderParams) -> None:
        if not params.weights:
            raise ValueError(f"embedder {params.kind!r} needs weights: a local path (nothing is downloaded)")
        if not Path(params.weights).exists():
            raise FileNotFoundError(f"embedder weights not found: {params.weights}")
        self.weights: str = params.weights
        self.params = params
        self.device = _pick_device(params.device)
        self.image_size = params.image_size
        self.processor: Any = None  # the weights' own transformers image processor, where they ship one

    @abstractmethod
    def forward(self, batch: Any) -> Any:
        """A batch of normalised NCHW pixels → features (N, dim)."""

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        chunks = []
        with torch.inference_mode():
            for lo in range(0, len(images), self.params.batch_size):
                batch = images[lo : lo + self.params.batch_size]
                if self.processor is not None:
                    pixels = self.processor(images=list(batch), return_tensors="np")["pixel_values"]
                else:
                    pixels = preprocess(batch, size=self.image_size, mean=self.mean, std=self.std)
                feats = self.forward(torch.from_numpy(pixels).to(self.device))
                chunks.append(feats.float().cpu().numpy())
        return l2_normalise(np.concatenate(chunks)) if chunks else np.zeros((0, 1), np.float32)


class ClipEmbedder(TorchEmbedder):
    name = "clip"
    mean, std = CLIP_MEAN, CLIP_STD

    def __init__(self, params: EmbedderParams) -> None:
        super().__init__(params)
        from transformers import CLIPModel

        self.model = CLIPModel.from_pretrained(self.weights, local_files_only=True).eval().to(self.device)
        self.image_size = self.model.config.vision_config.image_size
        self.processor = _image_processor(self.weights)

    def forward(self, batch: Any) -> Any:
        out = self.model.get_image_features(pixel_values=batch)
        return out if not hasattr(out, "pooler_output") else out.pooler_output


class DinoEmbedder(TorchEmbedder):
    """A DINO/DINOv2 ViT (transformers ``AutoModel``); the embedding is the CLS token."""

    name = "dino"

    def __init__(self, params: EmbedderParams) -> None:
        super().__init__(params)
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(self.weights, local_files_only=True).eval().to(self.device)
        # DINOv2's config.image_size (518) is the size its position embeddings were trained at; its
        # published processor feeds 224 (shortest edge 256, centre crop 224) and the model interpolates.
        # A DINO (v1) ViT takes exactly its config.image_size.
        if self.model.config.model_type != "dinov2":
            self.image_size = getattr(self.model.config, "image_size", params.image_size)
        self.processor = _image_processor(self.weights)

    def forward(self, batch: Any) -> Any:
        return self.model(pixel_values=batch).last_hidden_state[:, 0]


class SscdEmbedder(TorchEmbedder):
    """SSCD copy-detection descriptor from its TorchScript file (e.g. sscd_disc_mixup.torchscript.pt)."""

    name = "sscd"

    def __init__(self, params: EmbedderParams) -> None:
        super().__init__(params)
        import torch

        self.model = torch.jit.load(self.weights, map_location=self.device).eval()

    def forward(self, batch: Any) -> Any:
        return self.model(batch)


def view_layout(kind: str) -> ViewLayout:
    """How the embeddings of ``kind`` split into views and which views are compared (memguard/dedup/signals/views.py)."""
    return ROBUST_LAYOUT if kind == "robust" else SINGLE


def make_embedder(params: EmbedderParams) -> Embedder:
    if params.kind == "robust":
        return RobustEmbedder()
    if params.kind == "pixels":
        return PixelEmbedder(params.grid)
    if params.kind == "phash":
        return PHashEmbedder(params.grid if params.grid <= 16 else 8)
    models: dict[str, type[ClipEmbedder | DinoEmbedder | SscdEmbedder]] = {
        "clip": ClipEmbedder,
        "dino": DinoEmbedder,
        "sscd": SscdEmbedder,
    }
    if params.kind in models:
        return models[params.kind](params)
    if params.kind == "precomputed":
        raise ValueError("dedup.image.kind=precomputed is the vectors of corpus=embeddings; it embeds no images")
    raise ValueError(f"unknown embedder {params.kind!r}: {', '.join(EMBEDDER_KINDS)}")
