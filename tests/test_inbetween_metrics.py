import numpy as np
import pytest

from mofusion.metrics.inbetween import (
    align_signs,
    interpolation_baseline,
    l2p,
    l2q,
    npss,
    slerp,
    zero_velocity_baseline,
)


def random_quats(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=shape + (4,))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def test_identical_sequences_score_zero() -> None:
    q = random_quats((3, 8, 5))
    assert l2q(q, q) == 0.0 and npss(q, q) == pytest.approx(0.0, abs=1e-12)
    p = np.random.default_rng(1).normal(size=(3, 8, 5, 3))
    assert l2p(p, p, np.zeros((5, 3)), np.ones((5, 3))) == 0.0


def test_sign_flips_are_the_same_rotation() -> None:
    q = random_quats((2, 6, 4))
    flipped = q * np.where(np.random.default_rng(2).random((2, 6, 4, 1)) < 0.5, -1.0, 1.0)
    assert l2q(flipped, q) == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(align_signs(flipped, q), q)


def test_l2q_and_l2p_hand_values() -> None:
    true = np.zeros((1, 2, 2, 4))
    true[..., 0] = 1.0
    pred = true.copy()
    pred[0, 0, 0] = [0.0, 1.0, 0.0, 0.0]  # one joint of frame 0 turned 180 degrees: distance sqrt(2)
    assert l2q(pred, true) == pytest.approx(np.sqrt(2) / 2)  # mean over two frames
    p_true = np.zeros((1, 2, 2, 3))
    p_pred = p_true.copy()
    p_pred[0, 1, 1] = [3.0, 0.0, 4.0]  # 5 units off in frame 1, std 2 on every axis -> 2.5
    assert l2p(p_pred, p_true, np.zeros((2, 3)), np.full((2, 3), 2.0)) == pytest.approx(2.5 / 2)


def test_npss_grows_with_a_frequency_change() -> None:
    t = np.arange(64)[None, :, None, None]

    def wave(freq: float) -> np.ndarray:
        const = np.full_like(t, 0.5, dtype=float)
        return np.concatenate([np.cos(freq * t), np.sin(freq * t), const, const], axis=-1)

    assert npss(wave(0.1), wave(0.1)) == pytest.approx(0.0, abs=1e-12)
    assert 0 < npss(wave(0.12), wave(0.1)) < npss(wave(0.6), wave(0.1))


def test_slerp_midpoint_and_ends() -> None:
    q0 = np.array([1.0, 0.0, 0.0, 0.0])
    q1 = np.array([np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0])  # 90 degrees about y
    out = slerp(q0, q1, np.array([0.0, 0.5, 1.0]))
    assert np.allclose(out[0], q0) and np.allclose(out[2], q1)
    assert np.allclose(out[1], [np.cos(np.pi / 8), 0.0, np.sin(np.pi / 8), 0.0])


def test_baselines_fill_the_gap() -> None:
    quats = random_quats((2, 10, 3))
    root = np.random.default_rng(3).normal(size=(2, 10, 3))
    q, r = interpolation_baseline(quats, root, 2, 7)
    assert q.shape == (2, 4, 3, 4) and r.shape == (2, 4, 3)
    assert np.allclose(r[:, 1], root[:, 2] + 0.4 * (root[:, 7] - root[:, 2]))
    zq, zr = zero_velocity_baseline(quats, root, 2, 7)
    assert np.allclose(zq, quats[:, 2:3]) and np.allclose(zr, root[:, 2:3])
