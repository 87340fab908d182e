"""Beat Align Score pinned on hand-computed cases; beats found where a motion slows and where
clicks fall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mofusion.metrics.dance import beat_align_score, motion_beats, music_beats, to_reference_rate


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
