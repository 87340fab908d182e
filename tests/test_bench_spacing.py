"""The step spacings that bench/sample_quality.py compares against the library's even spacing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import sample_quality  # noqa: E402

import mofusion.diffusion  # noqa: E402
from mofusion.config import DiffusionConfig  # noqa: E402
from mofusion.diffusion import NoiseSchedule, make_sampler, spaced_timesteps  # noqa: E402

ALPHA_BAR = NoiseSchedule(DiffusionConfig(num_steps=1000)).alpha_bar64


def test_spacings_place_the_steps_by_hand() -> None:
    uniform = sample_quality.spaced_steps("uniform", ALPHA_BAR, 10)
    assert np.array_equal(uniform, spaced_timesteps(1000, 10))
    # 999 u^2 for u = 0, 1/4, 1/2, 3/4, 1: 0, 62.4, 249.75, 561.9, 999
    assert sample_quality.spaced_steps("power2", ALPHA_BAR, 5).tolist() == [999, 562, 250, 62, 0]
    snr = 0.5 * np.log(ALPHA_BAR / (1 - ALPHA_BAR))
    steps = sample_quality.spaced_steps("log-snr", ALPHA_BAR, 10)
    assert steps[0] == 999 and steps[-1] == 0 and np.all(np.diff(steps) < 0)
    gaps = np.diff(snr[steps[::-1]])  # even in log-SNR, up to rounding to whole steps
    assert np.allclose(gaps[1:-1], (snr[999] - snr[0]) / 9, rtol=0.05)
    with pytest.raises(ValueError, match="unknown spacing"):
        sample_quality.spaced_steps("cubic", ALPHA_BAR, 10)


def test_spacing_of_reaches_the_samplers_made_inside_and_is_undone() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000))
    with sample_quality.spacing_of("power2", ALPHA_BAR):
        inside = make_sampler(schedule, "ddpm", 5).timesteps
    assert inside.tolist() == [999, 562, 250, 62, 0]
    assert mofusion.diffusion.spaced_timesteps is spaced_timesteps
    assert make_sampler(schedule, "ddpm", 5).timesteps.tolist() == spaced_timesteps(1000, 5).tolist()
