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
    DPMSolverSampler,
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


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm", "dpm-sde"])
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
        # DPM-Solver++(2M) at 20 steps: measured 0.479 (ODE) and 0.476 (SDE), DDPM's 0.386
        ("dpm", 20, 0.0, 0.03),
        ("dpm-sde", 20, 0.0, 0.035),
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


@pytest.mark.parametrize(
    ("kind", "steps", "eta"),
    [("ddpm", 200, 0.0), ("ddim", 50, 0.0), ("ddim", 50, 1.0), ("dpm", 20, 0.0), ("dpm-sde", 20, 0.0)],
)
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


@pytest.mark.parametrize("schedule_kind", ["linear", "cosine"])
def test_dpm_solver_follows_the_ode_at_second_order(schedule_kind: str) -> None:
    """For Gaussian data the probability-flow ODE maps x_T to ``MU + SIGMA (x_T - sqrt(ab_T) MU) /
    sqrt(ab_T SIGMA^2 + 1 - ab_T)`` exactly (the marginals' quantiles); with the ideal denoiser the
    only error left is the solver's. DDIM is first order (error halves with twice the steps);
    DPM-Solver++(2M) falls faster (measured max errors at 10/20/50 steps, linear: DDIM 0.57, 0.29,
    0.12, DPM 0.44, 0.097, 0.006; cosine: DDIM 0.32, 0.16, 0.063, DPM 0.13, 0.0067, 0.0045)."""
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000, schedule=schedule_kind))
    ab_T = float(schedule.alpha_bar64[-1])
    x_T = torch.randn(4000, 1, 1, generator=torch.Generator().manual_seed(0))
    exact = MU + SIGMA * (x_T.double() - math.sqrt(ab_T) * MU) / math.sqrt(ab_T * SIGMA**2 + 1 - ab_T)

    def error(kind: str, steps: int) -> float:
        x = sample_loop(ideal_eps(schedule), make_sampler(schedule, kind, steps), x_T.shape, x_T=x_T)
        return float((x.double() - exact).abs().max())

    ddim, dpm = {n: error("ddim", n) for n in (20, 50)}, {n: error("dpm", n) for n in (20, 50)}
    assert ddim[20] == pytest.approx(2.5 * ddim[50], rel=0.25)  # first order
    assert dpm[20] < ddim[20] / 2.5 and dpm[50] < ddim[50] / 10
    assert dpm[50] < 0.01


def test_dpm_solver_coefficients() -> None:
    """The SDE form's first-order step is DDPM's posterior step; the second-order estimate's weights
    sum to the first-order step's; the last two steps are first order; no step adds noise without
    ``stochastic``, and the clean end returns the estimate."""
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000))
    sde, ode, ddpm = (make_sampler(schedule, kind, 10) for kind in ("dpm-sde", "dpm", "ddpm"))
    first, posterior = sde.coefficients(0), ddpm.coefficients(0)
    assert first.previous_x0_weight == 0.0
    for name in ("x0_weight", "xt_weight", "sigma"):
        assert getattr(first, name) == pytest.approx(getattr(posterior, name), rel=1e-9)
    middle = sde.coefficients(4)
    assert middle.previous_x0_weight < 0
    lam = [0.5 * math.log(a / (1 - a)) for a in schedule.alpha_bar64[sde.timesteps[3:6]]]
    h, r = lam[2] - lam[1], (lam[1] - lam[0]) / (lam[2] - lam[1])
    gain = math.sqrt(schedule.alpha_bar64[sde.timesteps[5]]) * -math.expm1(-2 * h)
    assert middle.x0_weight == pytest.approx(
        gain * (1 + 0.5 / r)
    ) and middle.x0_weight + middle.previous_x0_weight == pytest.approx(gain)
    assert all(ode.coefficients(i).sigma == 0.0 for i in range(10))
    assert [c.previous_x0_weight for c in (ode.coefficients(8), ode.coefficients(9))] == [0.0, 0.0]
    end = ode.coefficients(9)
    assert (end.x0_weight, end.xt_weight, end.sigma) == (1.0, 0.0, 0.0)
    with pytest.raises(MofusionError, match="step before it"):
        DPMSolverSampler(schedule, False).step(torch.zeros(1, 1, 1), 3, torch.zeros(1, 1, 1))
    with pytest.raises(MofusionError, match="ddpm, ddim, dpm, dpm-sde"):
        make_sampler(schedule, "euler", 10)


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
