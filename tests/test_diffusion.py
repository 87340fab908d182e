"""The diffusion process and samplers, pinned on closed forms and on a Gaussian data set whose ideal
denoiser is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mofusion.config import DiffusionConfig
from mofusion.diffusion import (
    DDIMSampler,
    DDPMSampler,
    NoiseSchedule,
    guided,
    make_betas,
    make_generator,
    make_sampler,
    sample_loop,
    spaced_timesteps,
)
from mofusion.errors import MofusionError


def test_linear_betas_and_alpha_bar() -> None:
    cfg = DiffusionConfig(num_steps=1000, schedule="linear")
    betas = make_betas(cfg)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    schedule = NoiseSchedule(cfg)
    assert float(schedule.alpha_bar[1]) == pytest.approx((1 - 1e-4) * (1 - betas[1]), rel=1e-6)
    assert np.all(np.diff(schedule.alpha_bar64) < 0) and 0 < schedule.alpha_bar64[-1] < 1


def test_cosine_alpha_bar_follows_the_formula() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000, schedule="cosine"))
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 900):
        assert schedule.alpha_bar64[t] == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_q_sample_and_its_inverse() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100))
    x0 = torch.randn(4, 3, 8)
    noise = torch.randn(4, 3, 8)
    t = torch.tensor([0, 10, 50, 99])
    x_t = schedule.q_sample(x0, t, noise)
    ab = torch.tensor(schedule.alpha_bar64[[0, 10, 50, 99]], dtype=torch.float32)[:, None, None]
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-6)
    assert torch.allclose(schedule.predict_x0(x_t, t, noise), x0, atol=1e-3)
    assert torch.allclose(schedule.predict_eps(x_t, t, x0), noise, atol=1e-3)


def test_spaced_timesteps() -> None:
    assert spaced_timesteps(1000, 5).tolist() == [999, 749, 500, 250, 0]
    assert spaced_timesteps(10, 10).tolist() == list(range(9, -1, -1))
    assert spaced_timesteps(1000, 1).tolist() == [999]
    with pytest.raises(MofusionError):
        spaced_timesteps(1000, 1001)
    with pytest.raises(MofusionError):
        spaced_timesteps(1000, 0)
    # stopping early: evenly from T - 1 down to the last step, both ends kept
    assert spaced_timesteps(1000, 5, last_step=400).tolist() == [999, 849, 700, 550, 400]
    assert spaced_timesteps(10, 4, last_step=6).tolist() == [9, 8, 7, 6]
    assert spaced_timesteps(1000, 1, last_step=400).tolist() == [999]
    for steps, last in ((5, 999), (5, -1)):
        with pytest.raises(MofusionError, match="last sampling step"):
            spaced_timesteps(1000, steps, last_step=last)
    with pytest.raises(MofusionError, match=r"between 1 and 600 \(sampling stops at step 400 of 1000\)"):
        spaced_timesteps(1000, 601, last_step=400)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_stopping_early_returns_the_clean_estimate_at_the_last_step(kind: str) -> None:
    """With last_step > 0 the sample is the model's x_0 estimate at that step (no noise added after
    it), and the model is never asked below it."""
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100, schedule="cosine"))
    sampler = make_sampler(schedule, kind, 4, last_step=40)
    asked, estimates = [], []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        asked.append(int(t[0]))
        return ideal_eps(schedule)(x, t).float()

    x = sample_loop(model, sampler, (3, 2, 5), torch.Generator().manual_seed(0),
                    callback=lambda i, out: estimates.append(out.pred_x0))  # fmt: skip
    assert asked == [99, 79, 60, 40]
    assert torch.equal(x, estimates[-1])


MU, SIGMA = 1.5, 0.5


def ideal_eps(schedule: NoiseSchedule):  # type: ignore[no-untyped-def]
    """E[eps | x_t] for data x_0 ~ N(MU, SIGMA^2): the exact minimiser of the training loss."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = schedule.alpha_bar[t].reshape(-1, 1, 1).double()
        return (1 - ab).sqrt() * (x.double() - ab.sqrt() * MU) / (ab * SIGMA**2 + 1 - ab)

    return fn


@pytest.mark.parametrize(
    ("kind", "steps", "eta", "std_tolerance"),
    [
        # the full chains are exact up to sampling error
        ("ddpm", 1000, 0.0, 0.02),
        ("ddim", 1000, 0.0, 0.02),
        # fewer steps add discretisation error, which shrinks the spread (measured: 0.485, 0.474, 0.444)
        ("ddpm", 200, 0.0, 0.03),
        ("ddim", 50, 0.0, 0.04),
        ("ddim", 50, 1.0, 0.07),
    ],
)
def test_samplers_reproduce_a_gaussian_data_set(
    kind: str, steps: int, eta: float, std_tolerance: float
) -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000))
    sampler = make_sampler(schedule, kind, steps, eta)
    x = sample_loop(ideal_eps(schedule), sampler, (8000, 1, 1), make_generator(0)).double()
    assert float(x.mean()) == pytest.approx(MU, abs=0.03)
    assert float(x.std()) == pytest.approx(SIGMA, abs=std_tolerance)


def ideal_x0(schedule: NoiseSchedule):  # type: ignore[no-untyped-def]
    """E[x_0 | x_t] for the same data: what a sample-predicting model's loss is minimised by."""
    eps_fn = ideal_eps(schedule)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = schedule.alpha_bar[t].reshape(-1, 1, 1).double()
        return (x.double() - (1 - ab).sqrt() * eps_fn(x, t)) / ab.sqrt()

    return fn


@pytest.mark.parametrize(("kind", "steps", "eta"), [("ddpm", 200, 0.0), ("ddim", 50, 0.0), ("ddim", 50, 1.0)])
def test_a_sample_predicting_model_samples_as_its_noise_predicting_twin(
    kind: str, steps: int, eta: float
) -> None:
    noise_model = NoiseSchedule(DiffusionConfig(num_steps=1000))
    sample_model = NoiseSchedule(DiffusionConfig(num_steps=1000, prediction="sample"))
    a = sample_loop(ideal_eps(noise_model), make_sampler(noise_model, kind, steps, eta), (4000, 1, 1),
                    make_generator(0))  # fmt: skip
    b = sample_loop(ideal_x0(sample_model), make_sampler(sample_model, kind, steps, eta), (4000, 1, 1),
                    make_generator(0))  # fmt: skip
    # the same estimates of x_0 and eps at every step: the same samples up to rounding
    assert torch.allclose(a, b, atol=1e-4)
    assert float(b.double().mean()) == pytest.approx(MU, abs=0.03)
    # one step by hand: the output is x_0 itself, eps the noise it implies
    x_t, x0 = torch.randn(2, 1, 3, dtype=torch.float64), torch.randn(2, 1, 3, dtype=torch.float64)
    out = DDPMSampler(sample_model).step(x0, 3, x_t, make_generator(0))
    ab = sample_model.alpha_bar64[996]
    eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    twin = DDPMSampler(noise_model).step(eps, 3, x_t, make_generator(0))
    assert torch.equal(out.pred_x0, x0) and torch.allclose(out.prev_sample, twin.prev_sample)


def test_ddim_is_deterministic_and_seeded() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100))
    fn = ideal_eps(schedule)
    a = sample_loop(fn, DDIMSampler(schedule), (3, 2, 4), make_generator(1))
    sampler = DDIMSampler(schedule)
    b = sample_loop(fn, sampler, (3, 2, 4), make_generator(1))
    c = sample_loop(fn, sampler, (3, 2, 4), make_generator(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # with eta = 0 the only randomness is x_T
    x_T = torch.randn(3, 2, 4)
    d = sample_loop(fn, sampler, (3, 2, 4), make_generator(5), x_T=x_T)
    e = sample_loop(fn, sampler, (3, 2, 4), make_generator(6), x_T=x_T)
    assert torch.equal(d, e)


def test_ddpm_step_matches_the_posterior_closed_form() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=10, schedule="linear", beta_start=0.1, beta_end=0.5))
    sampler = DDPMSampler(schedule)
    x_t, eps = torch.randn(2, 1, 3, dtype=torch.float64), torch.randn(2, 1, 3, dtype=torch.float64)
    index = 3  # t = 6 -> s = 5
    out = sampler.step(eps, index, x_t, make_generator(0))
    ab, b = schedule.alpha_bar64, make_betas(schedule.config)
    t, s = 6, 5
    x0 = (x_t - math.sqrt(1 - ab[t]) * eps) / math.sqrt(ab[t])
    mean = math.sqrt(ab[s]) * b[t] / (1 - ab[t]) * x0 + math.sqrt(1 - b[t]) * (1 - ab[s]) / (1 - ab[t]) * x_t
    noise = torch.randn(x_t.shape, generator=make_generator(0), dtype=torch.float64)
    expected = mean + math.sqrt(b[t] * (1 - ab[s]) / (1 - ab[t])) * noise
    assert torch.allclose(out.pred_x0, x0) and torch.allclose(out.prev_sample, expected)


@pytest.mark.parametrize("temperature", [0.5, 0.0])
def test_temperature_scales_only_the_noise_a_step_adds(temperature: float) -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=10, schedule="linear", beta_start=0.1, beta_end=0.5))
    x_t, eps = torch.randn(2, 1, 3, dtype=torch.float64), torch.randn(2, 1, 3, dtype=torch.float64)
    plain = DDPMSampler(schedule).step(eps, 3, x_t, make_generator(0))
    cooled = DDPMSampler(schedule, temperature=temperature).step(eps, 3, x_t, make_generator(0))
    ab, b = schedule.alpha_bar64, make_betas(schedule.config)
    sigma = math.sqrt(b[6] * (1 - ab[5]) / (1 - ab[6]))
    noise = torch.randn(x_t.shape, generator=make_generator(0), dtype=torch.float64)
    # same clean estimate and posterior mean; the noise term is scaled by the temperature
    assert torch.equal(cooled.pred_x0, plain.pred_x0)
    assert torch.allclose(cooled.prev_sample, plain.prev_sample - (1 - temperature) * sigma * noise)
    ddim = DDIMSampler(schedule, eta=1.0, temperature=temperature)
    assert ddim.coefficients(3).sigma == pytest.approx(
        temperature * DDIMSampler(schedule, 1.0).coefficients(3).sigma
    )
    with pytest.raises(MofusionError, match="temperature"):
        make_sampler(schedule, "ddpm", 5, temperature=-0.1)


def test_a_lower_temperature_narrows_the_samples_around_the_same_mean() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000))
    spread = {}
    for temperature in (1.0, 0.5):
        sampler = make_sampler(schedule, "ddpm", 200, temperature=temperature)
        x = sample_loop(ideal_eps(schedule), sampler, (8000, 1, 1), make_generator(0)).double()
        assert float(x.mean()) == pytest.approx(MU, abs=0.03)
        spread[temperature] = float(x.std())
    # on this data the sample is almost wholly made of the steps' noise (x_T's share has decayed), so
    # the spread halves with the noise (measured: 0.485 and 0.242)
    assert spread[0.5] == pytest.approx(0.5 * spread[1.0], rel=0.05)


def test_clipping_bounds_the_clean_estimate() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100))
    bound = torch.tensor([0.5, 2.0])
    sampler = make_sampler(schedule, "ddim", 10, clip=bound)
    x = torch.randn(4, 2, 6) * 50
    out = sampler.step(torch.zeros_like(x), 0, x)
    assert (out.pred_x0.abs() <= bound.reshape(1, 2, 1) + 1e-6).all()


def test_classifier_free_guidance_combines_the_two_passes() -> None:
    class Dummy(torch.nn.Module):
        def forward(self, x, t, cond, cond_mask=None, drop=None):  # type: ignore[no-untyped-def]
            c = cond.mean((1, 2)).reshape(-1, 1, 1)
            if drop is not None:
                c = torch.where(drop.reshape(-1, 1, 1), torch.zeros_like(c), c)
            return x + c

    x, t = torch.zeros(2, 1, 4), torch.zeros(2, dtype=torch.long)
    cond = torch.ones(2, 3, 5) * torch.tensor([1.0, 2.0]).reshape(2, 1, 1)
    eps = guided(Dummy(), cond, None, 3.0)(x, t)
    # eps_null = x, eps_cond = x + c: guided = x + 3 c
    assert torch.allclose(eps[:, 0, 0], torch.tensor([3.0, 6.0]))
    assert torch.allclose(guided(Dummy(), cond, None, 1.0)(x, t)[:, 0, 0], torch.tensor([1.0, 2.0]))
