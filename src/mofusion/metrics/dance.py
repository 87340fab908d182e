"""Dance metrics, to the definitions of Bailando's and FACT's evaluation code.

Beat Align Score (Li et al. 2021, FACT; as computed in Bailando's ``metrics_new.py``): kinematic
beats are the local minima of the mean joint speed (per-frame displacement averaged over joints,
smoothed by a Gaussian of sigma 5 frames); music beats come from librosa's beat tracker on the onset
envelope (tightness 100, as AIST++'s audio features); the score is the mean over music beats of
``exp(-d^2 / (2 sigma^2))``, ``d`` the distance in frames to the nearest kinematic beat, sigma = 3.
Both reference implementations work on AIST++'s 60 fps: motions and songs are brought to 60 fps
here first, so that the frame-based constants mean what they mean there (50 ms for sigma).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import argrelextrema

from ..audio import resample_audio
from ..motion import resample_positions
from ..skeleton import Skeleton

REFERENCE_FPS = 60.0
HOP = 512  # AIST++'s audio features: sample rate 60 x 512, one hop per 60-fps frame
BEAT_SIGMA = 3.0


def to_reference_rate(positions: np.ndarray, fps: float) -> np.ndarray:
    """Joint positions ``(T, J, 3)`` linearly resampled to 60 fps."""
    return resample_positions(np.asarray(positions, dtype=np.float64), fps, REFERENCE_FPS)


def motion_beats(positions: np.ndarray, fps: float) -> np.ndarray:
    """Frame indices (at 60 fps) of the kinematic beats of ``(T, J, 3)`` joint positions."""
    joints = to_reference_rate(positions, fps)
    speed = np.linalg.norm(joints[1:] - joints[:-1], axis=-1).mean(axis=1)
    return argrelextrema(gaussian_filter(speed, 5), np.less)[0]


def music_beats(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Frame indices (at 60 fps) of the beats librosa tracks in mono ``samples``."""
    import librosa

    rate = int(REFERENCE_FPS * HOP)
    samples = resample_audio(np.asarray(samples), int(sample_rate), rate)
    envelope = librosa.onset.onset_strength(y=np.asarray(samples, dtype=np.float32), sr=rate, hop_length=HOP)
    _, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=rate, hop_length=HOP, tightness=100)
    return np.asarray(beats, dtype=np.int64)


def beat_align_score(music: np.ndarray, motion: np.ndarray, sigma: float = BEAT_SIGMA) -> float:
    """Mean over music beats of ``exp(-d^2 / (2 sigma^2))``, ``d`` the frames to the nearest
    kinematic beat (0 when the motion has no beat)."""
    music, motion = np.asarray(music, dtype=np.float64), np.asarray(motion, dtype=np.float64)
    if len(music) == 0:
        raise ValueError("no music beats to align with")
    if len(motion) == 0:
        return 0.0
    nearest = np.min((music[:, None] - motion[None, :]) ** 2, axis=1)
    return float(np.mean(np.exp(-nearest / (2 * sigma**2))))


# -- FACT / Bailando motion features: kinetic (FID_k, Div_k) and geometric (FID_g, Div_g) -----------

KINETIC_WINDOW = 2  # frames on each side over which velocities and accelerations are averaged


def _window_mean(values: np.ndarray, first: int, last: int, half: int) -> np.ndarray:
    """For every ``i`` in ``1..T-1``, the mean of ``values[k]`` over ``k`` in ``[i - half, i + half]``
    clipped to ``[first, last]`` (``values`` indexed by ``k``, rows outside that range unused)."""
    count = len(values)
    cumulative = np.concatenate([np.zeros((1,) + values.shape[1:]), np.cumsum(values, axis=0)])
    i = np.arange(1, count)
    lo = np.maximum(i - half, first)
    hi = np.minimum(i + half, last)
    n = np.maximum(hi - lo + 1, 0)
    total = cumulative[np.maximum(hi + 1, lo)] - cumulative[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / n.reshape((-1,) + (1,) * (values.ndim - 1))


def kinetic_features(positions: np.ndarray, fps: float, reference_quirk: bool = True) -> np.ndarray:
    """FACT's kinetic features ``(3 J,)`` of one motion ``(T, J, 3)`` (Y up, metres), at 60 fps.

    Per joint, as AIST++'s ``extract_kinetic_features`` (the code Bailando and EDGE evaluate with):
    the mean squared horizontal and vertical speed, each speed averaged over +-2 frames, and the
    mean magnitude of the acceleration averaged the same way. The motion is first brought to 60 fps
    and its first root position moved to the origin, as those evaluations do. ``reference_quirk``
    keeps that code's ``v1 = p[k] - p[k-1] / dt`` (a misplaced bracket), which makes the third
    feature depend on positions: with it, numbers compare with published FID_k values.
    """
    joints = to_reference_rate(positions, fps)
    joints = joints - joints[:1, :1]
    count = len(joints)
    if count < 4:
        raise ValueError("kinetic features need at least 4 frames at 60 fps")
    dt = 1.0 / REFERENCE_FPS
    steps = np.zeros_like(joints)
    steps[1:] = joints[1:] - joints[:-1]  # steps[k] = p[k] - p[k-1]
    velocity = _window_mean(steps, 1, count - 1, KINETIC_WINDOW) / dt  # (T-1, J, 3) for i = 1..T-1
    horizontal = (velocity[..., [0, 2]] ** 2).sum(-1).mean(0)
    vertical = (velocity[..., 1] ** 2).mean(0)
    accel = np.zeros_like(joints)
    v2 = (joints[2:] - joints[1:-1]) / dt
    v1 = joints[1:-1] - joints[:-2] / dt if reference_quirk else (joints[1:-1] - joints[:-2]) / dt
    accel[1:-1] = (v2 - v1) / dt  # accel[k] for k = 1..T-2
    mean_accel = _window_mean(accel, 1, count - 2, KINETIC_WINDOW)
    expenditure = np.nan_to_num(np.linalg.norm(mean_accel, axis=-1)).sum(0) / (count - 1)
    return np.stack([horizontal, vertical, expenditure], axis=1).reshape(-1).astype(np.float32)


# The joints the geometric features name (SMPL's, as AIST++ spells them) and where each is found.
GEOMETRIC_JOINTS = ("root", "lhip", "rhip", "belly", "lknee", "rknee", "lankle", "rankle", "chest",
                    "ltoes", "rtoes", "neck", "lshoulder", "rshoulder", "lelbow", "relbow", "lwrist",
                    "rwrist")  # fmt: skip


@dataclass(frozen=True)
class GeometricSkeleton:
    """Where each of :data:`GEOMETRIC_JOINTS` is on a skeleton, and its body measures.

    ``joints`` maps a name to a joint index, or to ``(a, b, w)``: the point ``(1 - w) a + w b``
    (skeletons without a spine joint there). ``humerus``, ``shoulder_width`` and ``hip_width`` scale
    the thresholds (AIST++ uses SMPL's neutral body: 0.257, 0.391 and 0.119 m).
    """

    joints: dict[str, int | tuple[int, int, float]]
    humerus: float
    shoulder_width: float
    hip_width: float

    @classmethod
    def of(cls, skeleton: Skeleton) -> GeometricSkeleton:
        names = {n: i for i, n in enumerate(skeleton.names)}
        lookup = {"root": 0, "lhip": "left_hip", "rhip": "right_hip", "lknee": "left_knee",
                  "rknee": "right_knee", "lankle": "left_ankle", "rankle": "right_ankle",
                  "ltoes": ("left_foot", "left_toe"), "rtoes": ("right_foot", "right_toe"), "neck": "neck",
                  "lshoulder": "left_shoulder", "rshoulder": "right_shoulder", "lelbow": "left_elbow",
                  "relbow": "right_elbow", "lwrist": "left_wrist", "rwrist": "right_wrist",
                  "belly": "spine1", "chest": "spine3"}  # fmt: skip
        joints: dict[str, int | tuple[int, int, float]] = {}
        for key, options in lookup.items():
            if isinstance(options, int):
                joints[key] = options
                continue
            found = next(
                (names[o] for o in ((options,) if isinstance(options, str) else options) if o in names), None
            )
            if found is not None:
                joints[key] = found
        if "neck" not in joints:
            raise ValueError(f"geometric features need a neck joint ({skeleton.describe()})")
        # SMPL's spine1 and spine3 sit about a quarter and seven tenths of the way up to the neck
        joints.setdefault("belly", (0, int(joints["neck"]), 0.25))  # type: ignore[arg-type]
        joints.setdefault("chest", (0, int(joints["neck"]), 0.7))  # type: ignore[arg-type]
        missing = [n for n in GEOMETRIC_JOINTS if n not in joints]
        if missing:
            raise ValueError(
                f"geometric features need joints for {', '.join(missing)} ({skeleton.describe()})"
            )
        rest = skeleton_rest_positions(skeleton)

        def point(name: str) -> np.ndarray:
            return _point(rest[None], joints[name])[0]

        return cls(
            joints,
            float(np.linalg.norm(point("lshoulder") - point("lelbow"))),
            float(np.linalg.norm(point("lshoulder") - point("rshoulder"))),
            float(np.linalg.norm(point("lhip") - point("rhip"))),
        )


def skeleton_rest_positions(skeleton: Skeleton) -> np.ndarray:
    """``(J, 3)`` joint positions of the rest pose."""
    out = np.zeros((skeleton.num_joints, 3))
    for j, p in enumerate(skeleton.parents):
        out[j] = skeleton.offsets[j] + (out[p] if p >= 0 else 0.0)
    return out


def _point(positions: np.ndarray, where: int | tuple[int, int, float]) -> np.ndarray:
    if isinstance(where, tuple):
        a, b, w = where
        return (1 - w) * positions[:, a] + w * positions[:, b]
    return positions[:, where]


def _unit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norm = np.linalg.norm(v, axis=-1)
    return v / np.maximum(norm, 1e-8)[..., None], norm >= 1e-8


def geometric_features(positions: np.ndarray, fps: float, body: GeometricSkeleton) -> np.ndarray:
    """AIST++'s 32 boolean pose features (Mueller et al. 2005), as the share of frames where each
    holds, of one motion ``(T, J, 3)`` at 60 fps (the reference's speeds use 1/120 s per frame at
    60 fps, kept so thresholds mean what they mean there)."""
    joints = to_reference_rate(positions, fps)
    count = len(joints)
    if count < 2:
        raise ValueError("geometric features need at least 2 frames")
    p = {name: _point(joints, where) for name, where in body.joints.items()}
    zero = np.zeros((count, 3))
    up = np.tile([0.0, 1.0, 0.0], (count, 1))
    y_min = np.stack([np.zeros(count), joints[..., 1].min(axis=1), np.zeros(count)], axis=1)
    special = {"zero": zero, "y_unit": up, "minus_y_unit": -up, "y_min": y_min}
    get = {**p, **special}
    hl, sw, hw = body.humerus, body.shoulder_width, body.hip_width
    per_frame = 120.0  # the reference's 1 / time_per_frame

    def cur(n: str) -> np.ndarray:
        return get[n][1:]

    def prev(n: str) -> np.ndarray:
        return get[n][:-1]

    def nmove(j1: str, j2: str, j3: str, j4: str, threshold: float) -> np.ndarray:
        velocity = (cur(j4) - cur(j1)) - (prev(j4) - prev(j1))
        direction, ok = _unit(np.cross(cur(j3) - cur(j1), cur(j2) - cur(j1)))
        return ok & ((velocity * direction).sum(-1) * per_frame > threshold)

    def move(j1: str, j2: str, j3: str, j4: str, threshold: float) -> np.ndarray:
        velocity = (cur(j3) - cur(j1)) - (prev(j3) - prev(j1))
        direction, ok = _unit(cur(j2) - cur(j1))
        return ok & ((velocity * direction).sum(-1) * per_frame > threshold)

    def plane(j1: str, j2: str, j3: str, j4: str, threshold: float) -> np.ndarray:
        normal, ok = _unit(np.cross(cur(j3) - cur(j1), cur(j2) - cur(j1)))
        return ok & (((cur(j4) - cur(j1)) * normal).sum(-1) > threshold)

    def nplane(j1: str, j2: str, j3: str, j4: str, threshold: float) -> np.ndarray:
        normal, ok = _unit(cur(j2) - cur(j1))
        return ok & (((cur(j4) - cur(j3)) * normal).sum(-1) > threshold)

    def angle(j1: str, j2: str, j3: str, j4: str, bounds: tuple[float, float]) -> np.ndarray:
        a, ok_a = _unit(cur(j2) - cur(j1))
        b, ok_b = _unit(cur(j4) - cur(j3))
        degrees = np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))
        return ok_a & ok_b & (bounds[0] < degrees) & (degrees < bounds[1])

    def fast(j1: str, threshold: float) -> np.ndarray:
        return np.linalg.norm(cur(j1) - prev(j1), axis=-1) * per_frame > threshold

    features = [
        nmove("neck", "rhip", "lhip", "rwrist", 1.8 * hl),
        nmove("neck", "lhip", "rhip", "lwrist", 1.8 * hl),
        nplane("chest", "neck", "neck", "rwrist", 0.2 * hl),
        nplane("chest", "neck", "neck", "lwrist", 0.2 * hl),
        move("belly", "chest", "chest", "rwrist", 1.8 * hl),
        move("belly", "chest", "chest", "lwrist", 1.8 * hl),
        angle("relbow", "rshoulder", "relbow", "rwrist", (0, 110)),
        angle("lelbow", "lshoulder", "lelbow", "lwrist", (0, 110)),
        nplane("lshoulder", "rshoulder", "lwrist", "rwrist", 2.5 * sw),
        move("lwrist", "rwrist", "rwrist", "lwrist", 1.4 * hl),
        move("rwrist", "root", "lwrist", "root", 1.4 * hl),
        move("lwrist", "root", "rwrist", "root", 1.4 * hl),
        fast("rwrist", 2.5 * hl),
        fast("lwrist", 2.5 * hl),
        plane("root", "lhip", "ltoes", "rankle", 0.38 * hl),
        plane("root", "rhip", "rtoes", "lankle", 0.38 * hl),
        nplane("zero", "y_unit", "y_min", "rankle", 1.2 * hl),
        nplane("zero", "y_unit", "y_min", "lankle", 1.2 * hl),
        nplane("lhip", "rhip", "lankle", "rankle", 2.1 * hw),
        angle("rknee", "rhip", "rknee", "rankle", (0, 110)),
        angle("lknee", "lhip", "lknee", "lankle", (0, 110)),
        fast("rankle", 2.5 * hl),
        fast("lankle", 2.5 * hl),
        angle("neck", "root", "rshoulder", "relbow", (25, 180)),
        angle("neck", "root", "lshoulder", "lelbow", (25, 180)),
        angle("neck", "root", "rhip", "rknee", (50, 180)),
        angle("neck", "root", "lhip", "lknee", (50, 180)),
        plane("rankle", "neck", "lankle", "root", 0.5 * hl),
        angle("neck", "root", "zero", "y_unit", (70, 110)),
        nplane("zero", "minus_y_unit", "y_min", "rwrist", -1.2 * hl),
        nplane("zero", "minus_y_unit", "y_min", "lwrist", -1.2 * hl),
        fast("root", 2.3 * hl),
    ]  # fmt: skip
    return np.stack(features, axis=1).astype(np.float32).mean(axis=0)


def normalise_by(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardise feature sets by the reference set's mean and deviation (as Bailando does)."""
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    return [(x - mean) / (std + 1e-10) for x in (reference, *others)]


def average_distance(features: np.ndarray) -> float:
    """Diversity: the mean Euclidean distance over all pairs of feature vectors."""
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    distances = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return float(distances[np.triu_indices(n, 1)].mean())
