import numpy as np
import pytest

from mofusion.metrics.kinematic import bone_length_std, foot_skating_ratio, left_right_asymmetry, mean_ci
from mofusion.skeleton import Skeleton

# a pelvis with two legs: Hips -> Leg_L -> Toe_L, Hips -> Leg_R -> Toe_R
SK = Skeleton(
    ("Hips", "Leg_L", "Toe_L", "Leg_R", "Toe_R"),
    (-1, 0, 1, 0, 3),
    np.array([[0, 0, 0], [0.1, -0.5, 0], [0, -0.4, 0.1], [-0.1, -0.5, 0], [0, -0.4, 0.1]]),
)


def standing(frames: int = 20) -> np.ndarray:
    rest = np.array(
        [[0, 0.9, 0], [0.1, 0.4, 0], [0.1, 0.0, 0.1], [-0.1, 0.4, 0], [-0.1, 0.0, 0.1]], dtype=float
    )
    return np.repeat(rest[None, None], frames, axis=1)  # (1, T, J, 3)


def test_rigid_motion_has_no_bone_length_variation_or_asymmetry() -> None:
    absolute, relative = bone_length_std(standing(), SK)
    assert absolute[0] == pytest.approx(0.0, abs=1e-12) and relative[0] == pytest.approx(0.0, abs=1e-12)
    assert left_right_asymmetry(standing(), SK)[0][0] == pytest.approx(0.0, abs=1e-12)


def test_bone_length_std_of_an_oscillating_bone() -> None:
    pos = standing(20).copy()
    pos[0, ::2, 2, 1] -= 0.04  # the left toe drops 4 cm every other frame: lengths alternate
    absolute, _ = bone_length_std(pos, SK)
    lengths = np.linalg.norm(pos[0, :, 2] - pos[0, :, 1], axis=-1)
    assert absolute[0] == pytest.approx(lengths.std() / 4)  # one of four bones moves


def test_asymmetry_of_a_longer_leg() -> None:
    pos = standing(5).copy()
    pos[0, :, 2, 1] -= 0.02
    absolute, _ = left_right_asymmetry(pos, SK)
    toe_bone = np.linalg.norm(pos[0, 0, 2] - pos[0, 0, 1]) - np.linalg.norm(pos[0, 0, 4] - pos[0, 0, 3])
    assert absolute[0] == pytest.approx(abs(toe_bone) / 2)  # two mirrored pairs, one differs


def test_foot_skating() -> None:
    fps = 20.0
    planted = standing(40)
    assert foot_skating_ratio(planted, [2, 4], fps)[0] == 0.0
    sliding = planted.copy()
    sliding[0, :, :, 0] += np.arange(40)[:, None] * (1.0 / fps)  # the whole body slides at 1 m/s
    assert foot_skating_ratio(sliding, [2, 4], fps)[0] == pytest.approx(1.0)
    lifted = sliding.copy()
    lifted[..., 1] += 0.2  # the same slide 20 cm above the ground is walking on air, not skating
    assert foot_skating_ratio(lifted, [2, 4], fps)[0] == 0.0
    slow = planted.copy()
    slow[0, :, :, 0] += np.arange(40)[:, None] * (0.2 / fps)  # 0.2 m/s is below the 0.5 m/s threshold
    assert foot_skating_ratio(slow, [2, 4], fps)[0] == 0.0
    raised_ground = sliding.copy()
    raised_ground[..., 1] += 0.04
    assert foot_skating_ratio(raised_ground, [2, 4], fps, ground=0.04)[0] == pytest.approx(1.0)


def test_mean_ci() -> None:
    mean, half = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and half == pytest.approx(1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)
