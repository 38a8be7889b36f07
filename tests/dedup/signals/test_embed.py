"""Embedders: the offline ones, and the real loading code of CLIP / DINO / SSCD on tiny random models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memguard.dedup.signals.embed import EmbedderParams, PHashEmbedder, PixelEmbedder, make_embedder
from memguard.dedup.signals.neighbors import IndexParams, knn, neighbor_pairs
from tests.conftest import build_tiny_clip, random_rgb


def _images() -> list[np.ndarray]:
    base = np.asarray(random_rgb(0, 32))
    brighter = np.clip(base.astype(int) + 6, 0, 255).astype(np.uint8)
    return [base, brighter, np.asarray(random_rgb(1, 32)), np.zeros((32, 32, 3), np.uint8)]


@pytest.mark.parametrize("embedder", [PixelEmbedder(8), PHashEmbedder(8)])
def test_offline_embedders_unit_norm_and_match_near_copies(embedder) -> None:  # type: ignore[no-untyped-def]
    emb = embedder.embed(_images())
    assert np.isfinite(emb).all()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert emb[0] @ emb[1] > 0.95 > emb[0] @ emb[2]


def test_flat_images_of_different_colours_stay_apart() -> None:
    flat = [np.full((16, 16, 3), v, np.uint8) for v in (0, 128, 255)]
    emb = PixelEmbedder(8).embed(flat)
    assert np.isfinite(emb).all() and emb[0] @ emb[2] < 0


def test_clip_loads_from_local_folder(tmp_path: Path) -> None:
    build_tiny_clip(tmp_path / "clip")
    embedder = make_embedder(EmbedderParams(kind="clip", weights=str(tmp_path / "clip"), batch_size=2, device="cpu"))
    emb = embedder.embed(_images())
    assert emb.shape == (4, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_dino_loads_from_local_folder(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTModel

    ViTModel(
        ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(tmp_path / "dino")
    emb = make_embedder(EmbedderParams(kind="dino", weights=str(tmp_path / "dino"), device="cpu")).embed(_images())
    assert emb.shape == (4, 32) and np.isfinite(emb).all()


def _processed_features(model: torch.nn.Module, processor: object, cls: bool) -> np.ndarray:
    """What the embedder must compute: the processor's pixels through the model, L2-normalised."""
    pixels = torch.from_numpy(processor(images=_images(), return_tensors="np")["pixel_values"])  # type: ignore[operator]
    with torch.inference_mode():
        out = (
            model(pixel_values=pixels).last_hidden_state[:, 0] if cls else model.get_image_features(pixel_values=pixels)
        )
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return (out / out.norm(dim=1, keepdim=True)).numpy()


def test_clip_preprocesses_with_its_own_image_processor(tmp_path: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPModel

    folder = build_tiny_clip(tmp_path / "clip")
    processor = CLIPImageProcessor(
        size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}, image_mean=[0.2] * 3
    )
    processor.save_pretrained(folder)
    emb = make_embedder(EmbedderParams(kind="clip", weights=str(folder), device="cpu")).embed(_images())
    expected = _processed_features(CLIPModel.from_pretrained(folder).eval(), processor, cls=False)
    assert np.allclose(emb, expected, atol=1e-5)


def test_dinov2_input_size_from_its_processor_or_224(tmp_path: Path) -> None:
    """DINOv2's config says 518 (its position-embedding grid); its processor crops 224, or what the folder's
    processor says."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, patch_size=14
    )
    torch.manual_seed(0)
    Dinov2Model(config).save_pretrained(tmp_path / "dinov2")
    bare = make_embedder(EmbedderParams(kind="dino", weights=str(tmp_path / "dinov2"), device="cpu"))
    assert bare.image_size == 224 and bare.embed(_images()).shape == (4, 32)  # type: ignore[union-attr]
    processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28})
    processor.save_pretrained(tmp_path / "dinov2")
    emb = make_embedder(EmbedderParams(kind="dino", weights=str(tmp_path / "dinov2"), device="cpu")).embed(_images())
    expected = _processed_features(Dinov2Model.from_pretrained(tmp_path / "dinov2").eval(), processor, cls=True)
    assert np.allclose(emb, expected, atol=1e-5)


def test_sscd_torchscript(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.jit.script(net).save(str(tmp_path / "sscd.pt"))
    params = EmbedderParams(kind="sscd", weights=str(tmp_path / "sscd.pt"), image_size=64, device="cpu")
    emb = make_embedder(params).embed(_images())
    assert emb.shape == (4, 8) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_model_embedders_refuse_missing_weights() -> None:
    with pytest.raises(ValueError, match="local path"):
        make_embedder(EmbedderParams(kind="clip"))
    with pytest.raises(FileNotFoundError):
        make_embedder(EmbedderParams(kind="sscd", weights="/nonexistent/sscd.pt"))


def test_faiss_refuses_nan_and_index_kinds_agree() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 16))
    x = (centres[rng.integers(0, 50, 3000)] + 0.05 * rng.normal(size=(3000, 16))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn(bad, IndexParams())
    exact = knn(x, IndexParams(kind="flat", k=10))[1]
    for kind in ("ivf", "hnsw"):
        approx = knn(x, IndexParams(kind=kind, k=10, nprobe=8))[1]
        recall = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact, approx, strict=True)])
        assert recall > 0.9, kind
    pairs, sims = neighbor_pairs(x, IndexParams(kind="flat", k=5, min_sim=0.9))
    assert (pairs[:, 0] < pairs[:, 1]).all() and (sims >= 0.9).all()


def test_reduced_search_returns_exact_cosines() -> None:
    """IVF in a PCA projection proposes candidates; the similarities returned are the full vectors' cosines,
    and the near-duplicate pairs above the floor are the exact search's."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(3000, 128)) * np.linspace(2, 0.2, 128)  # most variance in few directions
    copies = base[rng.integers(0, 3000, 1000)] + 0.1 * rng.normal(size=(1000, 128))
    x = np.concatenate([base, copies]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims, idx = knn(x, IndexParams(kind="ivf", k=8, reduce_dim=32))
    assert np.allclose(sims, np.einsum("id,ikd->ik", x, x[idx]), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()  # most similar first
    exact_pairs, _ = neighbor_pairs(x, IndexParams(kind="flat", k=8, min_sim=0.9))
    pairs, pair_sims = neighbor_pairs(x, IndexParams(kind="ivf", k=8, reduce_dim=32, min_sim=0.9))
    assert np.allclose(pair_sims, np.einsum("id,id->i", x[pairs[:, 0]], x[pairs[:, 1]]), atol=1e-5)
    found = {tuple(p) for p in pairs.tolist()}
    assert len(exact_pairs) >= 1000 and np.mean([tuple(p) in found for p in exact_pairs.tolist()]) >= 0.98
