"""The copy guard inside a diffusers pipeline: every generated image gets a verdict (is it a near-copy of a
training image, which one, how similar), and a policy decides what the caller receives.

- ``CopyChecker`` takes the place of ``safety_checker`` in a diffusers text-to-image pipeline (the same call
  contract: ``images`` and ``clip_input`` in, images and one flag per image out), so the pipeline itself
  withholds what it flags, as it does with NSFW images.
- ``GuardedPipeline`` wraps any pipeline, with or without that slot (our ``MiniLMTextToImagePipeline``, a
  ``DDPMPipeline``): its output gains ``copy_verdicts``, and the policy is applied to its images.

Policies: ``tag`` (images unchanged; verdicts on the output and, for PIL images, in ``image.info``, which
``save_tagged`` writes as PNG text chunks), ``withhold`` (a copy is replaced by a black image, as the NSFW
checker does), ``regenerate`` (a copy is generated again with another seed, up to ``max_tries`` times; what is
still a copy after that is withheld).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from transformers import BatchFeature

from memguard.extract.guard import CopyGuard, CopyVerdict

POLICIES = ("tag", "withhold", "regenerate")
INFO_KEY = "memguard_copy_of"  # PNG text chunk: the nearest training key of a flagged image
INFO_SIMILARITY = "memguard_similarity"  # PNG text chunk: its similarity (every guarded image)
RESEED = 1_000_003  # a regenerated image's seed: the call's (first) seed + RESEED * try + its index


class NoFeatures:
    """The ``feature_extractor`` a pipeline with a safety checker requires: ``CopyChecker`` reads the images
    themselves, not CLIP features, so this hands over an empty feature batch."""

    def __call__(self, images: Any, return_tensors: str = "pt") -> BatchFeature:
        count = len(images) if isinstance(images, list) else 1
        return BatchFeature({"pixel_values": torch.zeros(count, 1)}, tensor_type=return_tensors)


@dataclass
class CopyChecker:
    """A diffusers ``safety_checker``: with ``withhold``, the generations ``guard`` calls copies come back
    black and flagged (the pipeline's ``nsfw_content_detected``); without, every image comes back as it was
    and unflagged (a flag would make the pipeline skip its denormalization). ``verdicts`` holds the last
    call's verdicts, one per image, either way."""

    guard: CopyGuard
    withhold: bool = True
    verdicts: list[CopyVerdict] = field(default_factory=list)

    def __call__(self, images: Any, clip_input: Any = None) -> tuple[Any, list[bool]]:
        pixels = _pixels_in_unit_range(images)
        self.verdicts = self.guard.check(list(pixels))
        flags = [v.is_copy and self.withhold for v in self.verdicts]
        for i, flagged in enumerate(flags):
            if flagged:
                images[i] = 0 * images[i]  # the NSFW checker's black image: zeros, never denormalized
        return images, flags


def _pixels_in_unit_range(images: Any) -> np.ndarray:
    """(N, H, W, C) floats in [0, 1] from what a diffusers pipeline hands its checker: a tensor in [-1, 1]
    (N, C, H, W), or a NumPy batch already in [0, 1] (N, H, W, C)."""
    if torch.is_tensor(images):
        return ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)


def install_checker(pipeline: Any, guard: CopyGuard, *, withhold: bool) -> CopyChecker | None:
    """Put a ``CopyChecker`` in the pipeline's ``safety_checker`` slot; None if it has no such slot."""
    if "safety_checker" not in getattr(pipeline, "components", {}):
        return None
    checker = CopyChecker(guard, withhold=withhold)
    pipeline.safety_checker = checker
    if getattr(pipeline, "feature_extractor", None) is None:
        pipeline.feature_extractor = NoFeatures()
    if hasattr(pipeline, "config") and "requires_safety_checker" in pipeline.config:
        pipeline.register_to_config(requires_safety_checker=True)
    return checker


class GuardedPipeline:
    """``GuardedPipeline(pipeline, guard, policy="tag")(prompt, generator=...)``: the pipeline's output, with
    ``copy_verdicts`` (one ``CopyVerdict`` per image) and the policy applied. A pipeline with a
    ``safety_checker`` slot gets a ``CopyChecker`` in it; any other is checked after each call."""

    def __init__(self, pipeline: Callable[..., Any], guard: CopyGuard, policy: str = "tag", *, max_tries: int = 3):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, got {max_tries}")
        self.pipeline, self.guard, self.policy, self.max_tries = pipeline, guard, policy, max_tries
        self.checker = install_checker(pipeline, guard, withhold=policy != "tag")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output, verdicts = self._generate(args, kwargs)
        if self.policy == "regenerate":
            verdicts = self._regenerate(output, verdicts, args=args, kwargs=kwargs)
        if self.policy != "tag":
            _withhold(output.images, verdicts, already_black=self.checker is not None)
        _tag(output.images, verdicts)
        output.copy_verdicts = verdicts
        return output

    def _generate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, list[CopyVerdict]]:
        if self.checker is not None:
            self.checker.verdicts = []  # never a previous call's verdicts
        output = self.pipeline(*args, **kwargs)
        if self.checker is None:
            return output, self.guard.check(list(output.images))
        if len(self.checker.verdicts) != len(output.images):
            raise ValueError(
                "the pipeline did not run its safety_checker on these images (output_type='latent'?): "
                "the guard has no verdict for them"
            )
        return output, list(self.checker.verdicts)

    def _regenerate(
        self, output: Any, verdicts: list[CopyVerdict], *, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[CopyVerdict]:
        """Generate each flagged image again with a new seed until it is no copy or ``max_tries`` is spent."""
        if kwargs.get("num_images_per_prompt", 1) != 1:
            raise ValueError("policy 'regenerate' needs num_images_per_prompt=1")
        call = dict(kwargs)
        prompts = call.pop("prompt", args[0] if args else None)
        prompts = [prompts] * len(verdicts) if isinstance(prompts, str) else prompts
        seed = _seed_of(call.get("generator"))
        for attempt in range(1, self.max_tries):
            flagged = [i for i, v in enumerate(verdicts) if v.is_copy]
            # One call per flagged image, with one generator: what every diffusers pipeline accepts.
            for i in flagged:
                call["generator"] = torch.Generator().manual_seed(seed + RESEED * attempt + i)
                if prompts is not None:
                    call["prompt"] = [prompts[i]]
                else:  # an unconditional pipeline
                    call["batch_size"] = 1
                again, again_verdicts = self._generate((), call)
                output.images[i], verdicts[i] = again.images[0], again_verdicts[0]
        return verdicts


def _seed_of(generator: Any) -> int:
    first = generator[0] if isinstance(generator, list) and generator else generator
    return int(first.initial_seed()) if isinstance(first, torch.Generator) else 0


def _withhold(images: Any, verdicts: list[CopyVerdict], *, already_black: bool) -> None:
    for i, verdict in enumerate(verdicts):
        if verdict.is_copy and not already_black:
            images[i] = Image.new("RGB", images[i].size) if isinstance(images[i], Image.Image) else 0 * images[i]


def _tag(images: Any, verdicts: list[CopyVerdict]) -> None:
    for image, verdict in zip(images, verdicts, strict=True):
        if isinstance(image, Image.Image):
            image.info.update(png_text(verdict))


def png_text(verdict: CopyVerdict) -> dict[str, str]:
    """The PNG text chunks of a guarded image: its similarity, and for a copy its nearest training key."""
    chunks = {INFO_SIMILARITY: f"{verdict.similarity:.4f}"}
    if verdict.is_copy:
        chunks[INFO_KEY] = verdict.training_key
    return chunks


def save_tagged(image: Image.Image, path: str | Path, verdict: CopyVerdict) -> None:
    """Save a generated image as PNG with its verdict in text chunks (``png_text``)."""
    info = PngImagePlugin.PngInfo()
    for key, value in png_text(verdict).items():
        info.add_text(key, value)
    image.save(path, format="PNG", pnginfo=info)
