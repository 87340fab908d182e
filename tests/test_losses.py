"""Kinematic losses pinned on hand-computed values, and the alpha_bar_t weighting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mofusion.bvh import read_bvh
from mofusion.config import DiffusionConfig, LossConfig
from mofusion.diffusion import NoiseSchedule
from mofusion.losses import (
    block_weight_vector,
    bone_length_variance,
    diffusion_losses,
    motion_loss,
    symmetry_loss,
)
from mofusion.motion import Motion
from mofusion.presets import bandai_spec
from mofusion.representation import MotionRepresentation, Normalizer
from mofusion.rotations import quat_to_matrix
from mofusion.skeleton import Skeleton, forward_kinematics


@pytest.fixture(scope="module")
def clip(bandai_clips: list[Path]) -> Motion:
    path = next(p for p in bandai_clips if "walk_happy" in p.name)
    return Motion.from_bvh(read_bvh(path), scale=0.01).resample(20.0).slice(0, 80)


def _subtree(skeleton: Skeleton, joint: int) -> list[int]:
    out = [joint]
    for j in range(joint + 1, skeleton.num_joints):
        if skeleton.parents[j] in out:
            out.append(j)
    return out


def test_bone_length_variance_is_zero_on_a_real_clip_and_exact_with_one_stretched_bone(clip: Motion) -> None:
    sk = clip.skeleton
    pos = torch.from_numpy(clip.positions())[None]  # (1, T, J, 3), metres
    mask = torch.ones(1, pos.shape[1], dtype=torch.bool)
    assert float(bone_length_variance(pos, mask, sk)) < 1e-20
    # stretch the left forearm by 3 cm in the second half of the frames (move its whole subtree)
    joint, delta = sk.index("Hand_L"), 0.03
    half = pos.shape[1] // 2
    direction = pos[0, :, joint] - pos[0, :, sk.parents[joint]]
    direction = direction / direction.norm(dim=-1, keepdim=True)
    stretched = pos.clone()
    for j in _subtree(sk, joint):
        stretched[0, half:, j] += delta * direction[half:]
    bones = sk.num_joints - 1
    # one bone alternates between l and l + delta over equal halves: variance delta^2 / 4, averaged over bones
    assert float(bone_length_variance(stretched, mask, sk)) == pytest.approx(delta**2 / 4 / bones, rel=1e-6)


def _symmetric(sk: Skeleton) -> Skeleton:
    offsets = sk.offsets.copy()
    for a, b in sk.mirror_bone_pairs():
        mean = 0.5 * (np.linalg.norm(offsets[a]) + np.linalg.norm(offsets[b]))
        offsets[a] *= mean / np.linalg.norm(offsets[a])
        offsets[b] *= mean / np.linalg.norm(offsets[b])
    return sk.with_offsets(offsets)


def test_symmetry_loss_is_zero_for_a_mirrored_skeleton_and_exact_for_one_longer_bone(clip: Motion) -> None:
    sk = _symmetric(clip.skeleton)
    rot = quat_to_matrix(torch.from_numpy(clip.rotations))[None]
    root = torch.from_numpy(clip.root_positions)[None]
    mask = torch.ones(1, clip.num_frames, dtype=torch.bool)
    pos, _ = forward_kinematics(sk, rot, root)
    assert float(symmetry_loss(pos, mask, sk)) < 1e-20
    joint, delta = sk.index("LowerLeg_L"), 0.02  # the left thigh ends at LowerLeg_L
    offsets = sk.offsets.copy()
    offsets[joint] *= 1 + delta / np.linalg.norm(offsets[joint])
    longer, _ = forward_kinematics(sk.with_offsets(offsets), rot, root)
    pairs = len(sk.mirror_bone_pairs())
    assert float(symmetry_loss(longer, mask, sk)) == pytest.approx(delta**2 / pairs, rel=1e-6)


def test_motion_loss() -> None:
    true = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert torch.equal(motion_loss(true, true, mask), torch.zeros(2, dtype=torch.float64))
    shift = torch.tensor([0.03, 0.0, 0.04], dtype=torch.float64)
    assert torch.allclose(
        motion_loss(true + shift, true, mask), torch.full((2,), 0.05**2, dtype=torch.float64)
    )


class _ZeroEps(torch.nn.Module):
    def forward(self, x, t, cond=None, cond_mask=None, drop=None):  # type: ignore[no-untyped-def]
        return torch.zeros_like(x)


@pytest.fixture(scope="module")
def batch(clip: Motion):  # type: ignore[no-untyped-def]
    spec = bandai_spec(clip.skeleton, 20.0)
    rep = MotionRepresentation(spec)
    features = rep.encode_motion(clip).float()[:64]
    norm = Normalizer.fit(features, spec.slices)
    x0 = norm.normalize(features).unsqueeze(0).repeat(3, 1, 1)
    return rep, norm, x0


def test_kinematic_terms_are_weighted_by_alpha_bar_of_each_sample(batch) -> None:  # type: ignore[no-untyped-def]
    rep, norm, x0 = batch
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000))
    cfg = LossConfig(bone_length_weight=2.0, symmetry_weight=3.0, motion_weight=5.0)
    t = torch.tensor([0, 400, 999])
    mask = torch.ones(x0.shape[:2], dtype=torch.bool)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    terms = diffusion_losses(_ZeroEps(), schedule, x0, mask, t, noise, rep, norm, cfg)
    assert torch.allclose(terms.weight, schedule.alpha_bar[t])
    expected = terms.weight * (2.0 * terms.bone_length + 3.0 * terms.symmetry + 5.0 * terms.motion)
    assert torch.allclose(terms.total - terms.eps_mse, expected, rtol=1e-5, atol=1e-9)
    assert torch.allclose(terms.eps_mse, (noise**2).mean((1, 2)))
    assert float(terms.weight[2]) < 1e-4  # at the noisiest step the kinematic terms hardly count


def test_kinematic_terms_vanish_for_a_perfect_prediction(batch) -> None:  # type: ignore[no-untyped-def]
    rep, norm, x0 = batch
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000))
    t = torch.tensor([5, 5, 5])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))

    class Perfect(torch.nn.Module):
        def forward(self, x, t, cond=None, cond_mask=None, drop=None):  # type: ignore[no-untyped-def]
            return noise.transpose(1, 2)

    mask = torch.ones(x0.shape[:2], dtype=torch.bool)
    terms = diffusion_losses(Perfect(), schedule, x0, mask, t, noise, rep, norm, LossConfig())
    assert float(terms.eps_mse.max()) == 0.0
    assert float(terms.motion.max()) < 1e-8 and float(terms.bone_length.max()) < 1e-8


def test_padding_frames_do_not_count(batch) -> None:  # type: ignore[no-untyped-def]
    rep, norm, x0 = batch
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000))
    t = torch.tensor([10, 200, 600])
    mask = torch.ones(x0.shape[:2], dtype=torch.bool)
    mask[:, 40:] = False
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    other = x0.clone()
    other[:, 40:] = torch.randn_like(other[:, 40:]) * 5
    other_noise = noise.clone()
    other_noise[:, 40:] = 3.0

    class Local(torch.nn.Module):  # a denoiser without temporal context, so padding cannot leak
        def forward(self, x, t, cond=None, cond_mask=None, drop=None):  # type: ignore[no-untyped-def]
            return 0.5 * x

    a = diffusion_losses(Local(), schedule, x0, mask, t, noise, rep, norm, LossConfig())
    b = diffusion_losses(Local(), schedule, other, mask, t, other_noise, rep, norm, LossConfig())
    for name in ("eps_mse", "bone_length", "symmetry", "motion"):
        assert torch.allclose(getattr(a, name), getattr(b, name)), name


def test_without_kinematic_losses_only_the_noise_loss_remains(batch) -> None:  # type: ignore[no-untyped-def]
    rep, norm, x0 = batch
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000))
    mask = torch.ones(x0.shape[:2], dtype=torch.bool)
    terms = diffusion_losses(
        _ZeroEps(),
        schedule,
        x0,
        mask,
        torch.tensor([1, 2, 3]),
        torch.randn(x0.shape),
        rep,
        norm,
        LossConfig(kinematic=False),
    )
    assert torch.equal(terms.total, terms.eps_mse)


def test_an_interpolation_residual_model_diffuses_the_residual(batch) -> None:  # type: ignore[no-untyped-def]
    from mofusion.editing import interpolate_known

    rep, norm, x0 = batch
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000))
    t = torch.tensor([3, 300, 900])
    mask = torch.ones(x0.shape[:2], dtype=torch.bool)
    known_mask = torch.zeros(x0.shape, dtype=torch.bool)
    known_mask[:, :10] = True
    known_mask[:, 40] = True
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    seen: dict[str, torch.Tensor] = {}

    class Perfect(torch.nn.Module):  # records its inputs and predicts the noise exactly
        def forward(self, x, t, cond, cond_mask, drop, known, known_mask):  # type: ignore[no-untyped-def]
            seen.update(x=x.transpose(1, 2), known=known.transpose(1, 2))
            return noise.transpose(1, 2)

    terms = diffusion_losses(Perfect(), schedule, x0, mask, t, noise, rep, norm, LossConfig(),
                             known_mask=known_mask, interpolation_residual=True)  # fmt: skip
    base = interpolate_known((x0 * known_mask).transpose(1, 2), known_mask.transpose(1, 2)).transpose(1, 2)
    assert torch.equal(seen["known"], base)  # the interpolation, on every frame
    assert torch.allclose(base[:, 20], x0[:, 9] + (x0[:, 40] - x0[:, 9]) * 11 / 31, atol=1e-6)
    assert torch.allclose(base[:, 50], x0[:, 40])  # held after the last known frame
    scale = schedule.alpha_bar[t].sqrt()[:, None, None]
    assert torch.allclose(seen["x"], schedule.q_sample(x0 - base, t, noise), atol=1e-6)
    # known values have a residual of zero: only noise there
    assert torch.allclose(seen["x"][known_mask], ((1 - scale**2).sqrt() * noise)[known_mask], atol=1e-5)
    # the motion recovered from a perfect prediction is the clean motion: no kinematic error
    assert float(terms.motion.max()) < 1e-8 and float(terms.eps_mse.max()) == 0.0


def _sample_prediction_setup(x0: torch.Tensor, seed: int):  # type: ignore[no-untyped-def]
    """A sample-predicting schedule, three steps from clean to noisiest, all frames valid, noise."""
    schedule = NoiseSchedule(DiffusionConfig(num_steps=1000, prediction="sample"))
    mask = torch.ones(x0.shape[:2], dtype=torch.bool)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return schedule, torch.tensor([0, 400, 999]), mask, noise


def test_a_sample_predicting_model_is_scored_on_the_clean_motion(batch) -> None:  # type: ignore[no-untyped-def]
    rep, norm, x0 = batch
    schedule, t, mask, noise = _sample_prediction_setup(x0, seed=4)
    # predicting zeros: the denoising term is x_0's mean square, whatever the noise and the step
    zero = diffusion_losses(_ZeroEps(), schedule, x0, mask, t, noise, rep, norm, LossConfig())
    assert torch.allclose(zero.eps_mse, (x0**2).mean((1, 2)))
    # the kinematic terms run on the output itself: decoded from zeros, the same at every step
    assert torch.allclose(zero.motion, zero.motion[:1].expand(3)) and float(zero.motion[0]) > 0
    assert torch.allclose(zero.weight, schedule.alpha_bar[t])

    class Perfect(torch.nn.Module):  # the clean residual, exactly
        def forward(self, x, t, cond, cond_mask, drop, known, known_mask):  # type: ignore[no-untyped-def]
            return (x0 - known.transpose(1, 2)).transpose(1, 2)

    known_mask = torch.zeros(x0.shape, dtype=torch.bool)
    known_mask[:, :10] = True
    terms = diffusion_losses(Perfect(), schedule, x0, mask, t, noise, rep, norm, LossConfig(),
                             known_mask=known_mask, interpolation_residual=True)  # fmt: skip
    assert float(terms.eps_mse.max()) == 0.0 and float(terms.motion.max()) < 1e-8


def test_block_weights_make_the_denoising_term_a_weighted_mean_over_channels(batch) -> None:  # type: ignore[no-untyped-def]
    rep, norm, x0 = batch
    schedule, t, mask, noise = _sample_prediction_setup(x0, seed=5)
    weights = {"root_height": 16.0, "root_xz_velocity": 4.0}
    vector = block_weight_vector(rep, weights)
    assert vector.shape == (rep.dim,) and float(vector[3]) == 16.0 and vector[1:3].tolist() == [4.0, 4.0]
    assert float(vector[0]) == 1.0 and float(vector[4:].min()) == 1.0 == float(vector[4:].max())
    cfg = LossConfig(kinematic=False, block_weights=weights)
    # predicting zeros, the error of every channel is x_0 itself: by hand, the weighted mean
    terms = diffusion_losses(_ZeroEps(), schedule, x0, mask, t, noise, rep, norm, cfg)
    per_channel = (x0**2).mean(1)  # (B, C)
    expected = (per_channel * vector).sum(1) / vector.sum()
    assert torch.allclose(terms.eps_mse, expected, rtol=1e-5)
    plain = diffusion_losses(_ZeroEps(), schedule, x0, mask, t, noise, rep, norm, LossConfig(kinematic=False))
    assert not torch.allclose(terms.eps_mse, plain.eps_mse)  # the root channels count more
    # all channels weighted alike is the plain mean
    same = LossConfig(kinematic=False, block_weights={b: 3.0 for b in rep.slices})
    assert torch.allclose(diffusion_losses(_ZeroEps(), schedule, x0, mask, t, noise, rep, norm, same).eps_mse,
                          plain.eps_mse, rtol=1e-6)  # fmt: skip
