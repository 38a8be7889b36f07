"""The audit's GPU generation switches (extract.bf16, extract.compile) run on the CPU: same layout of
resumable chunks, images close to the float32 ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memguard.common.config import ConfigError
from memguard.diffusion.models import ModelConfig, build_model
from memguard.extract.config import AuditConfig
from memguard.extract.generations import generate_resumable


def _generate(folder: Path, **switches: str) -> np.ndarray:
    model = build_model(ModelConfig(kind="unet_uncond", resolution=16, channels=(16, 32)))
    return generate_resumable(model, 6, cfg=AuditConfig(sample_steps=3, batch_size=4, **switches), folder=folder)  # type: ignore[arg-type]


def test_generation_switches_are_off_on_the_cpu_by_default() -> None:
    assert not AuditConfig(device="cpu").enabled("bf16") and not AuditConfig(device="cpu").enabled("compile")
    assert AuditConfig(device="cuda").enabled("bf16") and AuditConfig(device="cuda", compile="off").enabled("bf16")
    with pytest.raises(ConfigError, match=r"extract\.bf16"):
        AuditConfig(bf16="half")


def test_bf16_generation(tmp_path: Path) -> None:
    ref, bf16 = _generate(tmp_path / "fp32"), _generate(tmp_path / "bf16", bf16="on")
    assert bf16.shape == ref.shape == (6, 16, 16, 3) and bf16.dtype == np.uint8
    assert sorted(p.name for p in (tmp_path / "bf16").iterdir()) == sorted(p.name for p in (tmp_path / "fp32").iterdir())
    # An untrained network amplifies bfloat16's rounding; still mostly the same picture.
    assert 0 < np.abs(bf16.astype(int) - ref).mean() < 16


@pytest.mark.slow
def test_compiled_generation_matches_eager(tmp_path: Path) -> None:
    """torch.compile (inductor) on the CPU: ~40 s here, hence slow."""
    ref, compiled = _generate(tmp_path / "eager"), _generate(tmp_path / "compiled", compile="on")
    assert np.abs(compiled.astype(int) - ref).max() <= 1
