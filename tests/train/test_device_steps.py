"""The sync-free step path (train.device_rng, train.deferred_checks) run on the CPU: its draws, its
device-side skip of non-finite steps, its EMA, and its agreement with the host path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers.training_utils import EMAModel

from memguard.common.config import ConfigError
from memguard.corpus.twemoji import build_twemoji
from memguard.diffusion.images import load_image_set
from memguard.diffusion.models import ModelConfig, build_model
from memguard.train.config import TrainConfig
from memguard.train.device_steps import DeferredChecks, device_draws, masked_ema_step, micro_batch_seed
from memguard.train.loop import TrainingDiverged, train_model
from tests.conftest import TINY_TWEMOJI


@pytest.fixture(scope="module")
def tiny_data(cache_dir: Path):  # type: ignore[no-untyped-def]
    return load_image_set(str(build_twemoji(TINY_TWEMOJI, cache_dir / "corpus").train), 16, cache_dir)


def _draw(batch_number: int, seed: int = 0):  # type: ignore[no-untyped-def]
    return device_draws(torch.Generator(), seed, batch_number, micro=4, latent_shape=(3, 8, 8), timesteps=1000,
                        caption_dropout=0.5)  # fmt: skip


def test_device_draws_depend_on_seed_and_batch_only() -> None:
    a, again = _draw(7), _draw(7)
    assert torch.equal(a.noise, again.noise) and torch.equal(a.timesteps, again.timesteps)
    assert torch.equal(a.drop, again.drop) and a.caption_rng.random() == again.caption_rng.random()
    assert not torch.equal(_draw(8).noise, a.noise) and not torch.equal(_draw(7, seed=1).noise, a.noise)
    assert len({micro_batch_seed(s, b) for s in range(20) for b in range(200)}) == 4000
    assert all(0 <= micro_batch_seed(s, b) < 2**63 for s in (0, 2**40) for b in (0, 10**9))


def test_masked_ema_step_is_diffusers_step_or_nothing() -> None:
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    ours, theirs = (EMAModel(params, decay=0.999, use_ema_warmup=True, power=0.75, foreach=True) for _ in range(2))
    steps = torch.zeros((), dtype=torch.int64)
    for i in range(6):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        finite = torch.tensor(i != 3)
        steps += finite
        masked_ema_step(ours, params, finite=finite, steps=steps)
        if i != 3:
            theirs.step(params)
        for a, b in zip(ours.shadow_params, theirs.shadow_params, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert int(steps) == theirs.optimization_step == 5


def test_deferred_checks_skip_a_non_finite_step_on_the_device() -> None:
    param = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.AdamW([param], lr=0.1, fused=True)
    ema = EMAModel([param], decay=0.9, foreach=True)
    checks = DeferredChecks(ema, [param], torch.device("cpu"))
    param.grad = torch.full((4,), 0.5)
    checks.update(optimizer, torch.tensor(2.0), torch.tensor(1.0))
    after_one = (param.detach().clone(), optimizer.state[param]["exp_avg"].clone(), ema.shadow_params[0].clone())
    param.grad = torch.full((4,), math.nan)
    checks.update(optimizer, torch.tensor(math.nan), torch.tensor(math.nan))
    assert torch.equal(param.detach(), after_one[0]) and torch.equal(optimizer.state[param]["exp_avg"], after_one[1])
    assert torch.equal(ema.shadow_params[0], after_one[2]) and param.grad is None
    assert not hasattr(optimizer, "found_inf")
    reading = checks.read()
    assert (reading.skipped, reading.last_loss, reading.grad_norm) == (1, 2.0, math.inf) or (
        reading.skipped == 1 and reading.last_loss == 2.0 and math.isnan(reading.grad_norm)
    )
    assert ema.optimization_step == 1 and int(optimizer.state[param]["step"]) == 1


def _nan_at(model, calls: set[int]) -> None:  # type: ignore[no-untyped-def]
    """The unet's output turns NaN on the given forward calls (0-based): those steps must be skipped."""
    count = {"n": 0}

    def hook(_module, _inputs, output):  # type: ignore[no-untyped-def]
        count["n"] += 1
        return output * math.nan if count["n"] - 1 in calls else output

    model.unet.conv_out.register_forward_hook(hook)


def _train(tiny_data, out: Path, *, deferred: bool, nan_steps: set[int], **switches):  # type: ignore[no-untyped-def]
    model = build_model(ModelConfig(kind="unet_uncond", resolution=16, channels=(16, 32)))
    _nan_at(model, nan_steps)
    cfg = TrainConfig(steps=8, batch_size=4, warmup_steps=1, checkpoint_every=0, sample_every=0, log_every=3,
                      log_with="none", fused_adam="on", deferred_checks="on" if deferred else "off", **switches)  # fmt: skip
    result = train_model(model, tiny_data, cfg, out_dir=out)
    return result, {k: v.detach().clone() for k, v in model.unet.state_dict().items()}


@pytest.mark.parametrize("device_rng", ["off", "on"])
def test_deferred_path_matches_the_host_path(tiny_data, tmp_path: Path, device_rng: str) -> None:  # type: ignore[no-untyped-def]
    """Same fused AdamW, same draws: the device-side skip gives the host-side skip's weights (the EMA's
    decay is computed on the device: equal to float rounding)."""
    host, host_weights = _train(tiny_data, tmp_path / "host", deferred=False, nan_steps={2, 5}, device_rng=device_rng)
    dev, dev_weights = _train(tiny_data, tmp_path / "dev", deferred=True, nan_steps={2, 5}, device_rng=device_rng)
    assert host.skipped_steps == dev.skipped_steps == 2
    assert dev.final_loss == pytest.approx(host.final_loss, rel=1e-6)
    for name, value in host_weights.items():
        torch.testing.assert_close(dev_weights[name], value, rtol=1e-5, atol=1e-6)


def test_deferred_path_halts_a_diverged_run_at_its_next_read(tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TrainingDiverged, match="6 steps"):
        _train(tiny_data, tmp_path / "run", deferred=True, nan_steps=set(range(100)), max_bad_steps=3)


def test_speed_switches() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = TrainConfig()
    assert not any(auto.enabled(n, cpu) for n in ("compile", "fused_adam", "device_rng", "deferred_checks"))
    assert all(auto.enabled(n, cuda) for n in ("compile", "fused_adam", "device_rng", "deferred_checks", "pin_memory"))
    assert not TrainConfig(mixed_precision="fp16").enabled("deferred_checks", cuda)
    assert not TrainConfig(fused_adam=False).enabled("deferred_checks", cuda)
    assert TrainConfig(compile="on").enabled("compile", cpu) and not TrainConfig(compile="off").enabled("compile", cuda)
    assert not TrainConfig(pin_memory="on").enabled("pin_memory", cpu)  # page-locking needs CUDA
    with pytest.raises(ConfigError, match=r"needs train\.fused_adam"):
        TrainConfig(deferred_checks="on", fused_adam="off")
    with pytest.raises(ConfigError, match="fp16"):
        TrainConfig(deferred_checks="on", mixed_precision="fp16")
    with pytest.raises(ConfigError, match=r"train\.compile must be one of"):
        TrainConfig(compile="sometimes")


def test_device_path_with_caption_mitigations_is_reproducible(tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A caption-conditional model with embedding noise and random tokens drawn from the per-micro-batch
    streams: two runs, the same weights."""
    from memguard.train.mitigations import MitigationConfig

    def run(out: Path) -> dict[str, torch.Tensor]:
        model = build_model(ModelConfig(kind="unet_text", resolution=16, channels=(16, 32)))
        cfg = TrainConfig(steps=4, batch_size=4, warmup_steps=1, checkpoint_every=0, sample_every=0, log_with="none",
                          fused_adam="on", device_rng="on", deferred_checks="on")  # fmt: skip
        train_model(model, tiny_data, cfg, out_dir=out, mitigation=MitigationConfig(kinds=("rt", "gni"), p=0.5))
        return {k: v.detach().clone() for k, v in model.unet.state_dict().items()}

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
