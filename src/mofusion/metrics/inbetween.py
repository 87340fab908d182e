"""In-betweening metrics of the LAFAN1 benchmark (Harvey et al. 2020, the data set's own
``lafan1/benchmarks.py``): L2Q on global quaternions, L2P on normalised global positions, and NPSS
(Gopalakrishnan et al. 2019) on global quaternions, plus the two naive baselines.

One deliberate difference from that code: before L2Q and NPSS, every quaternion is put in the
hemisphere of its ground-truth counterpart (``q`` and ``-q`` are the same rotation). The reference
relies on both sequences being sign-continuous and starting aligned, which holds for its own
baselines but not for rotations decoded from a network; aligning measures the rotation difference
for every method alike.
"""

from __future__ import annotations

import numpy as np


def align_signs(q: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``q`` with each quaternion's sign flipped where its dot product with ``reference`` is negative."""
    dots = (q * reference).sum(-1, keepdims=True)
    return np.where(dots < 0, -q, q)


def l2q(pred_quats: np.ndarray, true_quats: np.ndarray) -> float:
    """Mean over sequences and frames of the L2 norm, over joints and components, of global
    quaternion differences. Shapes ``(B, T, J, 4)``."""
    pred = align_signs(pred_quats, true_quats)
    return float(np.mean(np.sqrt(np.sum((pred - true_quats) ** 2, axis=(2, 3)))))


def l2p(pred_positions: np.ndarray, true_positions: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """Mean over sequences and frames of the L2 norm of global positions normalised per joint and
    axis by training-set statistics. Positions ``(B, T, J, 3)``; ``mean``/``std`` ``(J, 3)``."""
    a = (pred_positions - mean) / std
    b = (true_positions - mean) / std
    return float(np.mean(np.sqrt(np.sum((a - b) ** 2, axis=(2, 3)))))


def npss(pred_quats: np.ndarray, true_quats: np.ndarray) -> float:
    """Normalized Power Spectrum Similarity of global quaternions ``(B, T, J, 4)``: the earth
    mover's distance between per-feature normalised power spectra, averaged with the ground truth's
    total power as weights."""
    pred = align_signs(pred_quats, true_quats).reshape(pred_quats.shape[0], pred_quats.shape[1], -1)
    true = true_quats.reshape(true_quats.shape[0], true_quats.shape[1], -1)
    true_power = np.real(np.fft.fft(true, axis=1)) ** 2
    pred_power = np.real(np.fft.fft(pred, axis=1)) ** 2
    true_total = true_power.sum(axis=1)
    pred_total = pred_power.sum(axis=1)
    true_cdf = np.cumsum(true_power / np.maximum(true_total[:, None], 1e-12), axis=1)
    pred_cdf = np.cumsum(pred_power / np.maximum(pred_total[:, None], 1e-12), axis=1)
    emd = np.abs(pred_cdf - true_cdf).sum(axis=1)
    return float(np.average(emd, weights=true_total))


def slerp(q0: np.ndarray, q1: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spherical interpolation from ``q0 (..., 4)`` to ``q1`` at ``weights (W,)``: ``(W, ..., 4)``."""
    q0 = q0 / np.linalg.norm(q0, axis=-1, keepdims=True)
    q1 = q1 / np.linalg.norm(q1, axis=-1, keepdims=True)
    dot = (q0 * q1).sum(-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    w = weights.reshape((-1,) + (1,) * q0.ndim)
    omega = np.arccos(np.clip(dot, -1.0, 1.0))
    sin = np.sin(omega)
    near = (1.0 - dot) < 0.01  # nearly parallel: linear interpolation is exact enough
    a = np.where(near, 1.0 - w, np.sin((1.0 - w) * omega) / np.where(near, 1.0, sin))
    b = np.where(near, w, np.sin(w * omega) / np.where(near, 1.0, sin))
    out = a * q0 + b * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def interpolation_baseline(
    local_quats: np.ndarray, root: np.ndarray, last_known: int, target: int
) -> tuple[np.ndarray, np.ndarray]:
    """LAFAN1's interpolation: slerp of local quaternions and lerp of the root between the last
    context frame and the target frame. Inputs ``(B, T, J, 4)`` and ``(B, T, 3)``; returns the
    transition frames ``last_known + 1 .. target - 1``."""
    n = target - last_known - 1
    weights = np.linspace(0.0, 1.0, n + 2)[1:-1]
    quats = slerp(local_quats[:, last_known], local_quats[:, target], weights)  # (n, B, J, 4)
    r0, r1 = root[:, last_known], root[:, target]
    roots = r0[None] + weights[:, None, None] * (r1 - r0)[None]
    return np.moveaxis(quats, 0, 1), np.moveaxis(roots, 0, 1)


def zero_velocity_baseline(
    local_quats: np.ndarray, root: np.ndarray, last_known: int, target: int
) -> tuple[np.ndarray, np.ndarray]:
    """LAFAN1's zero-velocity baseline: the last context frame held through the transition."""
    n = target - last_known - 1
    quats = np.repeat(local_quats[:, last_known : last_known + 1], n, axis=1)
    roots = np.repeat(root[:, last_known : last_known + 1], n, axis=1)
    return quats, roots
