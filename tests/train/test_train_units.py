"""Mitigations, the sampler, checkpoints, and each model kind training a few steps and round-tripping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memguard.corpus.twemoji import build_twemoji
from memguard.diffusion.images import load_image_set, square_resize
from memguard.diffusion.models import ModelConfig, build_model
from memguard.diffusion.sampling import denoising_losses, generate, noise_for
from memguard.diffusion.saved import load_model
from memguard.train.checkpoint import latest_checkpoint, save_checkpoint
from memguard.train.config import TrainConfig
from memguard.train.data import EpochSampler
from memguard.train.loop import MODEL_FOLDER, TrainingDiverged, train_model
from memguard.train.mitigations import MitigationConfig, gaussian_noise_injection, transform_caption, wen_keep_mask
from memguard.train.result import read_train_result
from tests.conftest import TINY_TWEMOJI
from tests.train.tiny_sd import build_tiny_sd

VOCAB = ["apple", "banana", "cherry", "delta"]


def test_caption_mitigations_follow_their_definitions() -> None:
    rng = np.random.default_rng(0)
    always = {k: MitigationConfig(kinds=(k,), p=1.0) for k in ("mc", "rc", "rt", "cwr")}
    caption = "waving hand sign"
    assert transform_caption(caption, ["hand waving"], config=always["mc"], rng=rng, vocab=VOCAB) == "hand waving"
    rc = transform_caption(caption, [], config=always["rc"], rng=rng, vocab=VOCAB).split()
    assert len(rc) == 6 and set(rc) <= set(VOCAB)
    rt = transform_caption(caption, [], config=always["rt"], rng=rng, vocab=VOCAB).split()
    assert len(rt) == 5 and len(set(rt) & set(VOCAB)) >= 1 and [w for w in rt if w not in VOCAB] == caption.split()
    cwr = transform_caption(caption, [], config=always["cwr"], rng=rng, vocab=VOCAB).split()
    assert len(cwr) == 5 and set(cwr) <= set(caption.split())
    never = MitigationConfig(kinds=("rc", "rt"), p=0.0)
    assert transform_caption(caption, [], config=never, rng=rng, vocab=VOCAB) == caption
    share = np.mean(
        [
            transform_caption(caption, [], config=MitigationConfig(kinds=("rc",)), rng=rng, vocab=VOCAB) != caption
            for _ in range(2000)
        ]
    )
    assert 0.07 < share < 0.13  # p = 0.1 by default


def test_gni_and_wen() -> None:
    cond = torch.zeros(1000, 1, 8)
    noisy = gaussian_noise_injection(
        cond, MitigationConfig(kinds=("gni",), gni_scale=0.5), torch.Generator().manual_seed(0)
    )
    fired = (noisy.abs().sum(dim=(1, 2)) > 0).float().mean()
    assert 0.07 < float(fired) < 0.13
    eps_c, eps_u = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    eps_c[1] = 1.0  # magnitude sqrt(48) ≈ 6.9 ≥ τ = 2
    assert wen_keep_mask(eps_c, eps_u, 2.0).tolist() == [True, False]


def test_sampler_is_deterministic_and_honours_weights() -> None:
    weights = np.array([1.0, 1.0, 2.0, 4.0])
    a, b = EpochSampler(weights, 3), EpochSampler(weights, 3)
    assert all(np.array_equal(a.batch(k, 3), b.batch(k, 3)) for k in range(50))
    counts = np.bincount(np.concatenate([a.batch(k, 8) for k in range(2000)]), minlength=4)
    assert np.allclose(counts / counts.sum(), weights / weights.sum(), atol=0.02)
    uniform = EpochSampler(np.ones(10), 0)
    assert sorted(np.concatenate([uniform.batch(k, 5) for k in range(2)]).tolist()) == list(range(10))
    with pytest.raises(ValueError):
        EpochSampler(np.array([0.0, 0.0]), 0)


def test_checkpoint_ignores_partial_and_corrupt(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path, 4, tensors={"w": torch.ones(3)}, state={}, keep=3)
    bad = save_checkpoint(tmp_path, 8, tensors={"w": torch.ones(3)}, state={}, keep=3)
    (bad / "state.safetensors").write_bytes(b"corrupted")
    (tmp_path / ".step-00000012.partial").mkdir()
    assert latest_checkpoint(tmp_path) == good
    assert not (tmp_path / ".step-00000012.partial").exists()


def test_square_resize() -> None:
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, 10:30] = 255
    out = square_resize(rgb, 10)
    assert out.shape == (10, 10, 3) and out.mean() > 250  # the centre square is kept


@pytest.fixture(scope="module")
def tiny_data(cache_dir: Path):  # type: ignore[no-untyped-def]
    return load_image_set(str(build_twemoji(TINY_TWEMOJI, cache_dir / "corpus").train), 16, cache_dir)


@pytest.mark.parametrize("kind", ["unet_uncond", "unet_text", "sd_finetune", "sd_lora"])
def test_each_model_kind_trains_saves_and_loads(kind: str, tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if kind.startswith("sd"):
        sd = build_tiny_sd(tmp_path / "sd")
        config = ModelConfig(
            kind="sd_finetune",
            resolution=16,
            channels=(16, 32),
            pretrained=str(sd),
            lora_rank=4 if kind == "sd_lora" else 0,
        )
    else:
        config = ModelConfig(kind=kind, resolution=16, channels=(16, 32))
    model = build_model(config)
    before = [p.detach().clone() for p in model.unet.parameters() if p.requires_grad]
    cfg = TrainConfig(
        steps=6,
        batch_size=8,
        warmup_steps=1,
        checkpoint_every=3,
        log_every=3,
        sample_every=6,
        sample_count=4,
        sample_steps=3,
    )
    result = train_model(model, tiny_data, cfg, out_dir=tmp_path / "run")
    after = [p for p in model.unet.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert (tmp_path / "run" / "samples" / "00000006.png").exists() and result.skipped_steps == 0
    model_dir = tmp_path / "run" / MODEL_FOLDER
    assert read_train_result(tmp_path / "run") == result  # the record round-trips through train_result.json
    loaded = load_model(model_dir)
    captions = ["waving hand sign"] * 2 if loaded.conditional else None
    images = generate(loaded, [0, 1], seed=0, steps=3, captions=captions, guidance=2.0, progress=False)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    again = generate(
        loaded, [1], seed=0, steps=3, captions=captions[:1] if captions else None, guidance=2.0, progress=False
    )
    assert np.array_equal(images[1], again[0])  # per-index seeding: independent of the batch
    _loads_in_diffusers(kind, loaded, model_dir, captions, images)


def _loads_in_diffusers(kind: str, loaded, model_dir: Path, captions, images: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """The saved folder is what diffusers loads, with no memguard code, and it computes what we compute."""
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    x = torch.randn((1, *loaded.latent_shape), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500])
    if kind == "unet_uncond":
        pipe = DiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
        assert type(pipe).__name__ == "DDPMPipeline"
        assert pipe(batch_size=1, num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 3)
    elif kind == "unet_text":  # its pipeline code is in the folder: diffusers asks for consent to run it
        pipe = DiffusionPipeline.from_pretrained(model_dir, local_files_only=True, trust_remote_code=True)
        assert type(pipe).__name__ == "MiniLMTextToImagePipeline"
        torch.testing.assert_close(
            pipe.encode_prompt(captions[:1]), loaded.encode_captions(captions[:1]), atol=1e-5, rtol=0
        )
        noise = noise_for([0], loaded.latent_shape, 0)
        out = pipe(captions[:1], num_inference_steps=3, guidance_scale=2.0, latents=noise, output_type="np").images
        assert np.abs(out[0].astype(int) - images[0].astype(int)).max() <= 1  # our sampler, theirs: one image
    else:
        pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
        cond = loaded.encode_captions(["a cat"])
        if kind == "sd_lora":
            base_eps = pipe.unet(x, t, encoder_hidden_states=cond).sample
            pipe.load_lora_weights(model_dir)
            assert not torch.allclose(pipe.unet(x, t, encoder_hidden_states=cond).sample, base_eps)
        with torch.no_grad():
            torch.testing.assert_close(
                pipe.unet(x, t, encoder_hidden_states=cond).sample, loaded.unet(x, t, encoder_hidden_states=cond).sample
            )
        out = pipe("a cat", num_inference_steps=2, height=16, width=16, output_type="np").images
        assert out.shape == (1, 16, 16, 3) and np.isfinite(out).all()


def test_nan_loss_is_skipped_then_halts(tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = build_model(ModelConfig(kind="unet_uncond", resolution=16, channels=(16, 32)))
    with torch.no_grad():
        model.unet.conv_out.weight.fill_(float("nan"))
    cfg = TrainConfig(steps=10, batch_size=4, max_bad_steps=3, checkpoint_every=2, log_every=5)
    with pytest.raises(TrainingDiverged):
        train_model(model, tiny_data, cfg, out_dir=tmp_path / "run")
    assert not list((tmp_path / "run" / "checkpoints").glob("step-*"))  # never checkpointed


def test_denoising_loss_is_reproducible(tiny_data) -> None:  # type: ignore[no-untyped-def]
    model = build_model(ModelConfig(kind="unet_uncond", resolution=16, channels=(16, 32)))
    pixels = tiny_data.pixels(np.arange(6))
    a = denoising_losses(model, pixels, [10, 100], seed=1)
    again = denoising_losses(model, pixels, [10, 100], seed=1, batch_size=4)  # other batching, same noise
    other_seed = denoising_losses(model, pixels, [10, 100], seed=2)
    assert a.shape == (6, 2) and np.isfinite(a).all()
    np.testing.assert_allclose(again, a, rtol=1e-5, atol=1e-6)
    assert not np.allclose(other_seed, a)
    assert not np.allclose(a[:3], a[3:])


def test_trackers_and_checkpoint_pruning(tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    from memguard.common.config import ConfigError

    model = build_model(ModelConfig(kind="unet_uncond", resolution=16, channels=(16, 32)))
    quiet = TrainConfig(steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, sample_every=0, log_with="none")
    train_model(model, tiny_data, quiet, out_dir=tmp_path / "quiet")
    assert not (tmp_path / "quiet" / "train").exists() and not (tmp_path / "quiet" / "checkpoints").exists()
    kept = TrainConfig(
        steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, sample_every=0, keep_final_checkpoints=True
    )
    train_model(model, tiny_data, kept, out_dir=tmp_path / "kept")
    assert latest_checkpoint(tmp_path / "kept" / "checkpoints") is not None
    assert any((tmp_path / "kept" / "train").iterdir())  # TensorBoard events
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match="wandb"):
            TrainConfig(log_with="wandb")
