import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from mofusion.rotations import (
    euler_to_matrix,
    matrix_to_6d,
    matrix_to_quat,
    quat_between,
    quat_conj,
    quat_fix,
    quat_mul,
    quat_rotate,
    quat_to_matrix,
    rot6d_to_matrix,
    yaw_quat,
)

unit = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
    lambda v: sum(x * x for x in v) > 1e-3
)


def _q(values: list[float]) -> torch.Tensor:
    q = torch.tensor(values, dtype=torch.float64)
    return q / q.norm()


def test_quarter_turn_about_z_maps_x_to_y() -> None:
    q = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=torch.float64)
    assert torch.allclose(
        quat_rotate(q, torch.tensor([1.0, 0, 0], dtype=torch.float64)),
        torch.tensor([0.0, 1, 0], dtype=torch.float64),
    )
    assert torch.allclose(
        quat_to_matrix(q), torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    )


def test_yaw_turns_forward_z_to_x() -> None:
    q = yaw_quat(torch.tensor(math.pi / 2, dtype=torch.float64))
    assert torch.allclose(
        quat_rotate(q, torch.tensor([0.0, 0, 1], dtype=torch.float64)),
        torch.tensor([1.0, 0, 0], dtype=torch.float64),
        atol=1e-12,
    )


@settings(max_examples=60, deadline=None)
@given(unit, unit)
def test_quaternion_product_matches_matrix_product(a: list[float], b: list[float]) -> None:
    qa, qb = _q(a), _q(b)
    assert torch.allclose(
        quat_to_matrix(quat_mul(qa, qb)), quat_to_matrix(qa) @ quat_to_matrix(qb), atol=1e-12
    )


@settings(max_examples=60, deadline=None)
@given(unit)
def test_matrix_quaternion_round_trip(a: list[float]) -> None:
    q = _q(a)
    back = matrix_to_quat(quat_to_matrix(q))
    assert back[0] >= 0
    assert torch.allclose(back, q, atol=1e-9) or torch.allclose(back, -q, atol=1e-9)


def test_matrix_to_quat_near_half_turns() -> None:
    angles = torch.tensor([math.pi, math.pi - 1e-7, math.pi / 2], dtype=torch.float64)
    axes = torch.nn.functional.normalize(
        torch.tensor([[1.0, 2, 3], [0, 1, 0], [1, 0, 0]], dtype=torch.float64), dim=-1
    )
    q = torch.cat([torch.cos(angles / 2)[:, None], torch.sin(angles / 2)[:, None] * axes], dim=-1)
    assert torch.allclose(quat_to_matrix(matrix_to_quat(quat_to_matrix(q))), quat_to_matrix(q), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(unit)
def test_6d_round_trip(a: list[float]) -> None:
    m = quat_to_matrix(_q(a))
    assert torch.allclose(rot6d_to_matrix(matrix_to_6d(m)), m, atol=1e-12)


def test_6d_is_the_first_two_columns() -> None:
    m = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    assert matrix_to_6d(m).tolist() == [0, 3, 6, 1, 4, 7]


def test_gram_schmidt_gives_a_rotation_for_any_6d() -> None:
    m = rot6d_to_matrix(torch.randn(100, 6, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    assert torch.allclose(m.transpose(-1, -2) @ m, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(m), torch.ones(100, dtype=torch.float64))


@pytest.mark.parametrize("order", ["ZXY", "XYZ", "YZX", "ZYX"])
def test_euler_matches_scipy_intrinsic(order: str) -> None:
    angles = np.random.default_rng(1).uniform(-180, 180, size=(50, 3))
    ours = euler_to_matrix(torch.tensor(np.deg2rad(angles)), order).numpy()
    theirs = Rotation.from_euler(order, angles, degrees=True).as_matrix()
    assert np.allclose(ours, theirs, atol=1e-12)


def test_quat_between_rotates_onto_target() -> None:
    v0 = torch.randn(64, 3, dtype=torch.float64)
    v1 = torch.randn(64, 3, dtype=torch.float64)
    q = quat_between(v0, v1)
    rotated = quat_rotate(q, torch.nn.functional.normalize(v0, dim=-1))
    assert torch.allclose(rotated, torch.nn.functional.normalize(v1, dim=-1), atol=1e-9)


def test_quat_fix_removes_sign_flips_without_changing_rotations() -> None:
    q = torch.nn.functional.normalize(torch.randn(1, 4, dtype=torch.float64), dim=-1).repeat(6, 1)
    q = q * torch.tensor([1, -1, -1, 1, -1, 1], dtype=torch.float64)[:, None]
    fixed = quat_fix(q)
    assert ((fixed[1:] * fixed[:-1]).sum(-1) > 0).all()
    assert torch.allclose(quat_to_matrix(fixed), quat_to_matrix(q))


def test_conjugate_is_inverse() -> None:
    q = torch.nn.functional.normalize(torch.randn(10, 4, dtype=torch.float64), dim=-1)
    ident = quat_mul(q, quat_conj(q))
    assert torch.allclose(ident, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(10, 4), atol=1e-12)
