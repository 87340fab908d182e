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

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import argrelextrema

from ..audio import resample_audio
from ..motion import resample_positions

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
