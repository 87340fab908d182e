"""Physical plausibility of joint positions: bone-length consistency, left/right symmetry, foot skating.

All functions take joint positions ``(N, T, J, 3)`` in metres, Y up, and return per-sample values
``(N,)`` so that callers can report means with confidence intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import uniform_filter1d

from ..skeleton import Skeleton


def _bone_lengths(positions: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    parents = list(skeleton.parents[1:])
    return np.linalg.norm(positions[..., 1:, :] - positions[..., parents, :], axis=-1)  # (N, T, J-1)


def bone_length_std(positions: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Temporal standard deviation of each bone's length, averaged over bones.

    Returns ``(absolute in metres, relative to each bone's mean length)``, each ``(N,)``; bones
    shorter than 1 cm are left out of the relative figure.
    """
    lengths = _bone_lengths(np.asarray(positions, dtype=np.float64), skeleton)
    std = lengths.std(axis=1)  # (N, K)
    mean = lengths.mean(axis=1)
    keep = mean > 0.01
    relative = np.where(keep, std / np.maximum(mean, 1e-9), 0.0).sum(-1) / np.maximum(keep.sum(-1), 1)
    return std.mean(-1), relative


def left_right_asymmetry(positions: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute difference between mirrored bone lengths (absolute in metres, and relative to
    the pair's mean length), each ``(N,)``; zeros when the skeleton has no mirrored bones."""
    pairs = skeleton.mirror_bone_pairs()
    n = np.asarray(positions).shape[0]
    if not pairs:
        return np.zeros(n), np.zeros(n)
    lengths = _bone_lengths(np.asarray(positions, dtype=np.float64), skeleton)
    left = lengths[..., [a - 1 for a, _ in pairs]]
    right = lengths[..., [b - 1 for _, b in pairs]]
    diff = np.abs(left - right)
    scale = np.maximum(0.5 * (left + right), 1e-9)
    return diff.mean(axis=(1, 2)), (diff / scale).mean(axis=(1, 2))


def foot_skating_ratio(
    positions: np.ndarray,
    toe_joints: Sequence[int],
    fps: float,
    ground: float = 0.0,
    height_threshold: float = 0.05,
    speed_threshold: float = 0.5,
    window_seconds: float = 0.25,
) -> np.ndarray:
    """Fraction of frame transitions in which a foot skates, as defined by GMD (Karunratanakul et
    al. 2023, the HumanML3D metric): a toe joint is in contact when it is lower than
    ``ground + height_threshold`` in both frames, and skates when its horizontal speed is above
    ``speed_threshold`` (m/s) both in that transition and averaged over a ``window_seconds`` window
    (GMD: 5 frames at 20 fps). A transition counts when either foot skates. Returns ``(N,)``.

    ``ground`` is the height of a planted toe joint of the skeleton (GMD's SMPL toes sit at the
    floor; Bandai-Namco's toe joint sits about 4 cm above it).
    """
    pos = np.asarray(positions, dtype=np.float64)
    toes = pos[:, :, list(toe_joints), :]  # (N, T, F, 3)
    speed = np.linalg.norm(toes[:, 1:, :, [0, 2]] - toes[:, :-1, :, [0, 2]], axis=-1) * fps  # (N, T-1, F)
    window = max(1, round(window_seconds * fps))
    average = uniform_filter1d(speed, size=window, axis=1, mode="constant")
    height = toes[..., 1] - ground
    contact = (height[:, :-1] < height_threshold) & (height[:, 1:] < height_threshold)
    skating = contact & (speed > speed_threshold) & (average > speed_threshold)
    return skating.any(axis=-1).mean(axis=1)


def planted_toe_height(positions: np.ndarray, toe_joints: Sequence[int]) -> float:
    """Median over clips of the lowest toe-joint height: where a planted toe sits for this skeleton."""
    pos = np.asarray(positions, dtype=np.float64)
    return float(np.median(pos[:, :, list(toe_joints), 1].min(axis=(1, 2))))


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95 % confidence interval (normal approximation)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()) if values.size else float("nan"), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))
