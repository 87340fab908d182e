"""The one rotation library of mofusion (torch, batched over any leading dimensions).

Conventions, used everywhere in the package:

- Quaternions are ``(..., 4)`` in **(w, x, y, z)** order, Hamilton product, unit norm.
- Rotation matrices are ``(..., 3, 3)`` and act on **column** vectors: ``v' = R @ v``.
  A quaternion ``q`` and a matrix ``R`` describe the same rotation when ``q v q* == R v``.
- The 6-D representation (Zhou et al. 2019, as HumanML3D stores it) is the first two **columns** of
  the matrix, concatenated: ``(R[:, 0], R[:, 1])`` -> ``(..., 6)``.
- Euler angles follow BVH: an order such as ``"ZXY"`` means ``R = Rz(a) @ Rx(b) @ Ry(c)`` (intrinsic
  rotations applied in the listed order), angles in degrees only at file boundaries.

Functions accept float32 or float64 tensors and keep the dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "quat_mul",
    "quat_conj",
    "quat_rotate",
    "quat_normalize",
    "quat_between",
    "quat_fix",
    "quat_to_matrix",
    "matrix_to_quat",
    "matrix_to_6d",
    "rot6d_to_matrix",
    "quat_to_6d",
    "yaw_quat",
    "euler_to_matrix",
]


def quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` (rotate by ``b`` first, then by ``a``)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        dim=-1,
    )


def quat_conj(q: Tensor) -> Tensor:
    """Conjugate, which is the inverse of a unit quaternion."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors ``v (..., 3)`` by unit quaternions ``q (..., 4)`` (shapes broadcast)."""
    w = q[..., :1]
    r = q[..., 1:]
    r, v = torch.broadcast_tensors(r, v)
    w = w.expand(r.shape[:-1] + (1,))
    uv = torch.linalg.cross(r, v, dim=-1)
    uuv = torch.linalg.cross(r, uv, dim=-1)
    return v + 2.0 * (w * uv + uuv)


def quat_normalize(q: Tensor, eps: float = 1e-12) -> Tensor:
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_between(v0: Tensor, v1: Tensor) -> Tensor:
    """Shortest-arc rotation taking direction ``v0`` onto direction ``v1`` (inputs need not be unit).

    Uses ``q = normalize(|v0||v1| + v0.v1, v0 x v1)``, the same closed form HumanML3D uses, so
    features computed with it match that data set. Undefined for exactly opposite vectors.
    """
    v0, v1 = torch.broadcast_tensors(v0, v1)
    cross = torch.linalg.cross(v0, v1, dim=-1)
    w = torch.sqrt((v0 * v0).sum(-1, keepdim=True) * (v1 * v1).sum(-1, keepdim=True))
    w = w + (v0 * v1).sum(-1, keepdim=True)
    return quat_normalize(torch.cat((w, cross), dim=-1))


def quat_fix(q: Tensor, dim: int = 0) -> Tensor:
    """Flip signs along ``dim`` (time) so consecutive quaternions have non-negative dot products."""
    q = q.movedim(dim, 0)
    dots = (q[1:] * q[:-1]).sum(-1)
    flips = torch.cumsum((dots < 0).to(torch.int64), dim=0) % 2
    sign = torch.ones_like(q[..., 0])
    sign[1:] = 1.0 - 2.0 * flips.to(q.dtype)
    return (q * sign[..., None]).movedim(0, dim)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` of quaternions ``(..., 4)`` (normalised on the way)."""
    w, x, y, z = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    m = torch.stack(
        (
            1 - two_s * (y * y + z * z),
            two_s * (x * y - z * w),
            two_s * (x * z + y * w),
            two_s * (x * y + z * w),
            1 - two_s * (x * x + z * z),
            two_s * (y * z - x * w),
            two_s * (x * z - y * w),
            two_s * (y * z + x * w),
            1 - two_s * (x * x + y * y),
        ),
        dim=-1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: Tensor) -> Tensor:
    """Unit quaternions with ``w >= 0`` of rotation matrices, robust near 180 degrees.

    Picks, per matrix, the largest of the four candidate denominators (Shepperd's method) so that
    no branch divides by a small number.
    """
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4*w^2, 4*x^2, 4*y^2, 4*z^2 (each clamped: rounding can make them slightly negative)
    squares = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), dim=-1
    ).clamp_min(0.0)
    roots = torch.sqrt(squares)
    # candidate i: quaternion scaled by 2*q_i, from the off-diagonal sums and differences
    candidates = (
        torch.stack(
            (
                torch.stack((squares[..., 0], m21 - m12, m02 - m20, m10 - m01), dim=-1),
                torch.stack((m21 - m12, squares[..., 1], m10 + m01, m02 + m20), dim=-1),
                torch.stack((m02 - m20, m10 + m01, squares[..., 2], m12 + m21), dim=-1),
                torch.stack((m10 - m01, m20 + m02, m21 + m12, squares[..., 3]), dim=-1),
            ),
            dim=-2,
        )
        / (2.0 * roots.clamp_min(1e-12))[..., None]
    )
    best = squares.argmax(dim=-1)
    index = best[..., None, None].expand(best.shape + (1, 4))
    q = torch.gather(candidates, -2, index).squeeze(-2)
    q = quat_normalize(q)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_6d(m: Tensor) -> Tensor:
    """First two columns of ``m``, concatenated: ``(..., 6)``."""
    return torch.cat((m[..., :, 0], m[..., :, 1]), dim=-1)


def rot6d_to_matrix(d6: Tensor, eps: float = 1e-8) -> Tensor:
    """Nearest rotation to a (possibly unnormalised) 6-D vector, by Gram-Schmidt on the two columns."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(eps)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=-1, keepdim=True).clamp_min(eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def quat_to_6d(q: Tensor) -> Tensor:
    return matrix_to_6d(quat_to_matrix(q))


def yaw_quat(angle: Tensor) -> Tensor:
    """Rotation by ``angle`` radians about +Y (the up axis)."""
    half = 0.5 * angle
    zero = torch.zeros_like(angle)
    return torch.stack((torch.cos(half), zero, torch.sin(half), zero), dim=-1)


_AXES = {"X": 0, "Y": 1, "Z": 2}


def _axis_matrix(axis: str, angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "X":
        rows = (one, zero, zero, zero, c, -s, zero, s, c)
    elif axis == "Y":
        rows = (c, zero, s, zero, one, zero, -s, zero, c)
    else:
        rows = (c, -s, zero, s, c, zero, zero, zero, one)
    return torch.stack(rows, dim=-1).reshape(angle.shape + (3, 3))


def euler_to_matrix(angles: Tensor, order: str) -> Tensor:
    """Matrices of intrinsic Euler angles (radians) ``(..., 3)`` in ``order``, e.g. ``"ZXY"``."""
    if len(order) != 3 or set(order) - set(_AXES) or len(set(order)) != 3:
        raise ValueError(f"invalid Euler order {order!r}")
    m = _axis_matrix(order[0], angles[..., 0])
    m = m @ _axis_matrix(order[1], angles[..., 1])
    return m @ _axis_matrix(order[2], angles[..., 2])
