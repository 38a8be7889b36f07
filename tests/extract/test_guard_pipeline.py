"""The copy guard inside diffusers pipelines: in the safety_checker slot of a (tiny, local) Stable Diffusion
pipeline, and around our saved text-to-image and unconditional pipelines, with each policy.

Each test guards against an image the pipeline itself generates for seed 0 (a regurgitation by
construction) and an unrelated image; another seed's generation is no copy of it (similarity ~0.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from memguard.diffusion.models import ModelConfig, build_model
from memguard.diffusion.saved import save_model
from memguard.extract.guard import CopyGuard
from memguard.extract.guard_pipeline import INFO_KEY, INFO_SIMILARITY, CopyChecker, GuardedPipeline, save_tagged
from tests.train.tiny_sd import build_tiny_sd

UNRELATED = Image.fromarray(np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = build_tiny_sd(tmp_path_factory.mktemp("sd"), resolution=32)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(root / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(root / "unet"),
        scheduler=DDPMScheduler.from_pretrained(root / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sd_call(pipe: Any, seeds: list[int]) -> Any:
    """The pipeline's own images, without any checker (a GuardedPipeline installs one into the pipeline)."""
    pipe.safety_checker = None
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(["a cat"] * len(seeds), num_inference_steps=2, height=32, width=32, generator=generators)


def _guard_against(image: Image.Image) -> CopyGuard:
    return CopyGuard([image, UNRELATED], ["regurgitated", "unrelated"])


def test_tag_in_the_safety_checker_slot_keeps_the_images_and_names_the_copy(tiny_sd: Any, tmp_path: Path) -> None:
    plain = _sd_call(tiny_sd, [0, 1]).images
    guarded = GuardedPipeline(tiny_sd, _guard_against(plain[0]), policy="tag")
    assert isinstance(tiny_sd.safety_checker, CopyChecker)
    out = guarded(["a cat"] * 2, num_inference_steps=2, height=32, width=32,
                  generator=[torch.Generator().manual_seed(s) for s in (0, 1)])  # fmt: skip
    copy, other = out.copy_verdicts
    assert copy.is_copy and copy.training_key == "regurgitated" and copy.similarity > 0.99
    assert not other.is_copy and other.similarity < 0.5
    for got, want in zip(out.images, plain, strict=True):  # tagging changes no pixel
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert out.nsfw_content_detected == [False, False]
    assert out.images[0].info[INFO_KEY] == "regurgitated" and INFO_KEY not in out.images[1].info
    save_tagged(out.images[0], tmp_path / "copy.png", copy)
    reread = Image.open(tmp_path / "copy.png")
    assert reread.text[INFO_KEY] == "regurgitated" and float(reread.text[INFO_SIMILARITY]) > 0.99


def test_an_output_the_checker_never_saw_is_an_error_not_a_stale_verdict(tiny_sd: Any) -> None:
    plain = _sd_call(tiny_sd, [0]).images
    guarded = GuardedPipeline(tiny_sd, _guard_against(plain[0]), policy="tag")
    guarded(["a cat"], num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="did not run its safety_checker"):
        guarded(["a cat"], num_inference_steps=2, height=32, width=32, output_type="latent")


def test_withhold_in_the_slot_blacks_out_the_copy_only(tiny_sd: Any) -> None:
    plain = _sd_call(tiny_sd, [0, 1]).images
    out = GuardedPipeline(tiny_sd, _guard_against(plain[0]), policy="withhold")(
        ["a cat"] * 2, num_inference_steps=2, height=32, width=32,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
    )  # fmt: skip
    assert out.nsfw_content_detected == [True, False]
    assert np.asarray(out.images[0]).max() == 0
    assert np.array_equal(np.asarray(out.images[1]), np.asarray(plain[1]))


def test_regenerate_replaces_the_copy_with_a_new_seed(tiny_sd: Any) -> None:
    plain = _sd_call(tiny_sd, [0, 1]).images
    guarded = GuardedPipeline(tiny_sd, _guard_against(plain[0]), policy="regenerate", max_tries=2)
    out = guarded(["a cat"] * 2, num_inference_steps=2, height=32, width=32,
                  generator=[torch.Generator().manual_seed(s) for s in (0, 1)])  # fmt: skip
    assert [v.is_copy for v in out.copy_verdicts] == [False, False]
    assert np.asarray(out.images[0]).max() > 0 and not np.array_equal(np.asarray(out.images[0]), np.asarray(plain[0]))
    assert np.array_equal(np.asarray(out.images[1]), np.asarray(plain[1]))
    # With one try there is no second seed: the copy stays withheld.
    once = GuardedPipeline(tiny_sd, _guard_against(plain[0]), policy="regenerate", max_tries=1)
    kept = once(["a cat"] * 2, num_inference_steps=2, height=32, width=32,
                generator=[torch.Generator().manual_seed(s) for s in (0, 1)])  # fmt: skip
    assert kept.copy_verdicts[0].is_copy and np.asarray(kept.images[0]).max() == 0


@pytest.fixture(scope="module")
def saved_pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Our own saved models as diffusers loads them: the MiniLM text-to-image pipeline and a DDPMPipeline,
    neither with a safety_checker slot."""
    from diffusers import DiffusionPipeline

    pipes = {}
    for kind in ("unet_text", "unet_uncond"):
        folder = tmp_path_factory.mktemp(kind)
        save_model(build_model(ModelConfig(kind=kind, resolution=32, channels=(16, 32)), seed=0), folder)
        pipes[kind] = DiffusionPipeline.from_pretrained(folder, local_files_only=True, trust_remote_code=True)
        pipes[kind].set_progress_bar_config(disable=True)
    return pipes


def _saved_call(pipe: Any, *, guarded: Any = None) -> Any:
    """Two images from one generator (seed 0), as a user calls these pipelines."""
    call = guarded or pipe
    if "text_encoder" in pipe.components:
        return call(["red heart"] * 2, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    return call(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["unet_text", "unet_uncond"])
def test_a_pipeline_without_the_slot_is_checked_after_the_call(kind: str, saved_pipelines: dict[str, Any]) -> None:
    pipe = saved_pipelines[kind]
    plain = _saved_call(pipe).images
    guard = _guard_against(plain[0])
    tagged = _saved_call(pipe, guarded=GuardedPipeline(pipe, guard, policy="tag"))
    assert [v.is_copy for v in tagged.copy_verdicts] == [True, False]
    assert tagged.images[0].info[INFO_KEY] == "regurgitated"
    withheld = _saved_call(pipe, guarded=GuardedPipeline(pipe, guard, policy="withhold"))
    assert np.asarray(withheld.images[0]).max() == 0
    assert np.array_equal(np.asarray(withheld.images[1]), np.asarray(plain[1]))
    again = _saved_call(pipe, guarded=GuardedPipeline(pipe, guard, policy="regenerate"))
    assert [v.is_copy for v in again.copy_verdicts] == [False, False]
    assert not np.array_equal(np.asarray(again.images[0]), np.asarray(plain[0]))


def test_a_policy_that_does_not_exist_is_refused(saved_pipelines: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="policy"):
        GuardedPipeline(saved_pipelines["unet_uncond"], _guard_against(UNRELATED), policy="ignore")
