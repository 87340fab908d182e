"""Beat Align Score pinned on hand-computed cases; beats found where a motion slows and where
clicks fall; FACT's kinetic features equal to their loop-by-loop definition and by hand, the
geometric features on a standing and a moving body, and diversity by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mofusion.metrics.dance import (
    GeometricSkeleton,
    average_distance,
    beat_align_score,
    geometric_features,
    kinetic_features,
    motion_beats,
    music_beats,
    normalise_by,
    to_reference_rate,
)


def test_beat_align_score_by_hand() -> None:
    assert beat_align_score(np.array([10, 40]), np.array([10, 40])) == 1.0
    # 3 frames off (one sigma) at every beat: exp(-9 / 18)
    assert beat_align_score(np.array([10, 40]), np.array([13, 43])) == pytest.approx(math.exp(-0.5))
    # the nearest kinematic beat counts: 0 and 6 frames away
    assert beat_align_score(np.array([10, 40]), np.array([10, 34, 100])) == pytest.approx(
        (1 + math.exp(-2)) / 2
    )
    assert beat_align_score(np.array([10]), np.array([])) == 0.0
    with pytest.raises(ValueError):
        beat_align_score(np.array([]), np.array([1]))


def test_motion_beats_are_where_the_motion_slows() -> None:
    fps = 30.0
    t = np.arange(int(6 * fps)) / fps
    # a joint swinging at 1 Hz: speed |cos| is lowest at the turning points, every 0.5 s from 0.25 s
    x = np.sin(2 * np.pi * 1.0 * t)
    positions = np.zeros((len(t), 2, 3))
    positions[:, 0, 0] = x
    beats = motion_beats(positions, fps)
    expected = (0.25 + 0.5 * np.arange(12)) * 60
    # every kinematic beat within 2 frames (at 60 fps) of a turning point; a minimum that falls
    # between two equal frames is no strict minimum and is skipped, as in the reference code
    assert np.abs(beats[:, None] - expected[None]).min(axis=1).max() <= 2
    assert len(beats) >= len(expected) - 2
    assert to_reference_rate(positions, fps).shape[0] == int(round(t[-1] * 60)) + 1


def test_music_beats_follow_clicks() -> None:
    rate = 22050
    samples = np.zeros(rate * 12)
    for c in np.arange(0, len(samples), rate // 2):  # 120 beats per minute
        samples[c : c + 300] += np.hanning(300)
    beats = music_beats(samples, rate)
    gaps = np.diff(beats)
    assert len(beats) >= 18 and np.median(gaps) == pytest.approx(30, abs=1)  # 0.5 s at 60 fps


def _reference_kinetic(joints: np.ndarray, quirk: bool) -> np.ndarray:
    """AIST++'s kinetic features written out loop by loop from their definition (60-fps input)."""
    dt, count, out = 1 / 60, len(joints), []
    for j in range(joints.shape[1]):
        horizontal = vertical = expenditure = 0.0
        for i in range(1, count):
            ks = [i + w for w in range(-2, 3) if i + w - 1 >= 0 and i + w < count]
            v = sum(joints[k, j] - joints[k - 1, j] for k in ks) / (len(ks) * dt)
            horizontal += v[0] ** 2 + v[2] ** 2
            vertical += v[1] ** 2
            ks = [i + w for w in range(-2, 3) if i + w - 1 >= 0 and i + w + 1 < count]
            a = np.zeros(3)
            for k in ks:
                v2 = (joints[k + 1, j] - joints[k, j]) / dt
                v1 = joints[k, j] - joints[k - 1, j] / dt if quirk else (joints[k, j] - joints[k - 1, j]) / dt
                a += (v2 - v1) / dt
            expenditure += np.linalg.norm(a / len(ks))
        out += [horizontal / (count - 1), vertical / (count - 1), expenditure / (count - 1)]
    return np.array(out)


@pytest.mark.parametrize("quirk", [True, False])
def test_kinetic_features_match_the_reference_definition(quirk: bool) -> None:
    joints = np.random.default_rng(3).normal(size=(30, 3, 3)).cumsum(axis=0) * 0.01
    joints -= joints[:1, :1]
    ours = kinetic_features(joints, 60.0, reference_quirk=quirk)
    assert np.allclose(ours, _reference_kinetic(joints, quirk), rtol=1e-6)


def test_kinetic_features_of_a_steady_walk_by_hand() -> None:
    joints = np.zeros((61, 1, 3))
    joints[:, 0, 0] = np.arange(61) * 0.02  # 1.2 m/s along x at 60 fps
    horizontal, vertical, expenditure = kinetic_features(joints, 60.0, reference_quirk=False)
    assert horizontal == pytest.approx(1.44) and vertical == 0 and expenditure == pytest.approx(0, abs=1e-9)


def _standing(frames: int) -> np.ndarray:
    """A standing pose of the SMPL-22 skeleton (HumanML3D's rest pose, feet on the floor)."""
    from mofusion.metrics.dance import skeleton_rest_positions
    from mofusion.presets import smpl22_skeleton

    rest = skeleton_rest_positions(smpl22_skeleton())
    rest[:, 1] -= rest[:, 1].min()
    return np.repeat(rest[None], frames, axis=0)


def test_geometric_features_of_standing_and_of_running() -> None:
    from mofusion.presets import smpl22_skeleton

    body = GeometricSkeleton.of(smpl22_skeleton())
    assert body.humerus == pytest.approx(0.263, abs=0.01) and body.joints["belly"] == 3
    still = geometric_features(_standing(30), 60.0, body)
    assert still.shape == (32,) and set(np.unique(still)) <= {0.0, 1.0}
    fast = [12, 13, 21, 22, 31]  # hands, ankles and root faster than 2.5 (2.3) humerus lengths a second
    assert not still[fast].any()
    assert still[28] == 0  # the spine is upright: not 70-110 degrees from vertical
    moving = _standing(30) + (np.arange(30) * 0.05)[:, None, None] * np.array([1.0, 0.0, 0.0])
    assert geometric_features(moving, 60.0, body)[fast].all()  # 3 m/s (the reference counts 1/120 s a frame)


def test_diversity_is_the_mean_pairwise_distance() -> None:
    points = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert average_distance(points) == pytest.approx((5 + 10 + 5) / 3)
    ref, other = normalise_by(np.array([[1.0], [3.0]]), np.array([[5.0]]))
    assert np.allclose(ref, [[-1.0], [1.0]]) and np.allclose(other, [[3.0]])
