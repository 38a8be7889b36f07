"""The attack on a model that really memorized: a tiny corpus where one image is duplicated many times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memguard.corpus.twemoji import emoji_files, render
from memguard.diffusion.images import ImageSet
from memguard.diffusion.models import ModelConfig, build_model
from memguard.diffusion.sampling import denoising_losses, generate
from memguard.diffusion.saved import save_model
from memguard.extract.attacks import unconditional_attack
from memguard.extract.guard import CopyGuard
from memguard.extract.membership import loss_attack
from memguard.train.config import TrainConfig
from memguard.train.loop import train_model


def _image_set(images: np.ndarray) -> ImageSet:
    n = len(images)
    return ImageSet(
        images, [f"c{i}" for i in range(n)], [f"k{i}" for i in range(n)], np.ones(n), [[] for _ in range(n)], 0
    )


@pytest.fixture(scope="module")
def emoji() -> np.ndarray:
    files = emoji_files()
    rng = np.random.default_rng(0)
    return np.stack([render(files[i], 8) for i in rng.choice(len(files), 120, replace=False)])


@pytest.fixture(scope="module")
def memorizer(emoji: np.ndarray, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """30 singletons plus one image repeated 150 times, at 8x8 (where a CPU memorizes within two minutes)."""
    torch.set_num_threads(2)
    singles, dup = emoji[:30], emoji[30]
    data = _image_set(np.concatenate([singles, np.repeat(dup[None], 150, axis=0)]))
    model = build_model(ModelConfig(kind="unet_uncond", resolution=8, channels=(32, 64)))
    cfg = TrainConfig(
        steps=1500, batch_size=64, lr=2e-3, warmup_steps=20, checkpoint_every=0, log_every=100, ema_decay=0.99
    )
    train_model(model, data, cfg, out_dir=tmp_path_factory.mktemp("memorizer"))
    return model, singles, dup


@pytest.mark.slow  # trains a memorizer (2–4 min on 2 cores); .ci/run runs the slow tests too
@pytest.mark.timeout(
    900
)  # the module's memorizer trains in the first test that needs it: 1,500 steps at 6–12 steps/s here
def test_attack_extracts_the_duplicate_and_no_singleton(memorizer) -> None:  # type: ignore[no-untyped-def]
    model, singles, dup = memorizer
    reference = np.concatenate([dup[None], singles])
    generated = generate(model, list(range(64)), seed=0, steps=20, progress=False)
    result = unconditional_attack(generated, reference, n=10)
    extracted = set(result.nearest[result.score < 0.3].tolist())
    assert extracted == {0}, (sorted(extracted), np.sort(result.score)[:10])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_membership_auc(memorizer, emoji: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    model, singles, _ = memorizer
    to_pixels = lambda x: x.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0  # noqa: E731
    heldout = emoji[40:100]
    steps = [50, 100, 200]
    trained = loss_attack(
        denoising_losses(model, to_pixels(singles), steps, seed=0),
        denoising_losses(model, to_pixels(heldout), steps, seed=0),
        steps,
    )
    untrained_model = build_model(ModelConfig(kind="unet_uncond", resolution=8, channels=(32, 64)), seed=5)
    untrained = loss_attack(
        denoising_losses(untrained_model, to_pixels(singles), steps, seed=0),
        denoising_losses(untrained_model, to_pixels(heldout), steps, seed=0),
        steps,
    )
    assert abs(untrained["per_timestep"]["100"]["auc"] - 0.5) < 0.2
    assert trained["auc"] > 0.6 > untrained["per_timestep"]["100"]["auc"] - 0.1


def test_copy_guard_tags_copies_and_wraps_an_untrained_pipeline(emoji: np.ndarray, tmp_path: Path) -> None:
    guard = CopyGuard(list(emoji[:31]), [f"k{i}" for i in range(31)])
    brighter = np.clip(emoji[30].astype(int) + 3, 0, 255).astype(np.uint8)
    verdicts = guard.check([brighter, emoji[100]])
    assert verdicts[0].is_copy and verdicts[0].training_key == "k30"
    assert not verdicts[1].is_copy
    from diffusers import DDPMPipeline

    save_model(build_model(ModelConfig(kind="unet_uncond", resolution=8, channels=(16, 32))), tmp_path / "model")
    pipe = DDPMPipeline.from_pretrained(tmp_path / "model", local_files_only=True)
    output = guard.wrap(pipe)(batch_size=3, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert len(output.copy_verdicts) == 3 and len(output.images) == 3


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_copy_guard_tags_copies_and_wraps_a_pipeline(memorizer, emoji: np.ndarray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, singles, dup = memorizer
    guard = CopyGuard(list(np.concatenate([dup[None], singles])), ["dup", *[f"s{i}" for i in range(30)]])
    brighter = np.clip(dup.astype(int) + 3, 0, 255).astype(np.uint8)
    verdicts = guard.check([brighter, emoji[100]])
    assert verdicts[0].is_copy and verdicts[0].training_key == "dup"
    assert not verdicts[1].is_copy
    from diffusers import DDPMPipeline

    save_model(model, tmp_path / "model")
    pipe = DDPMPipeline.from_pretrained(tmp_path / "model", local_files_only=True)
    guarded = guard.wrap(pipe)
    output = guarded(batch_size=4, num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    assert len(output.copy_verdicts) == 4
    assert sum(v.is_copy for v in output.copy_verdicts) >= 1  # the memorized image comes out of the pipeline
