import math

import numpy as np
import pytest
import torch

from mofusion.errors import MofusionError
from mofusion.presets import smpl22_skeleton
from mofusion.rotations import quat_to_matrix
from mofusion.skeleton import EndSite, Skeleton, end_site_positions, forward_kinematics, joint_side


def chain() -> Skeleton:
    # root -> a (1 up) -> b (2 along x)
    return Skeleton(
        ("root", "a", "b"), (-1, 0, 1), np.array([[0, 0, 0], [0, 1, 0], [2, 0, 0]]), (EndSite(2, (0, 0, 1)),)
    )


def rot_z(deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)


def test_fk_of_a_hand_built_chain() -> None:
    # the root turns 90 degrees about z and sits at (5, 0, 0); joint a turns another 90 degrees
    rotations = torch.stack([rot_z(90), rot_z(90), torch.eye(3, dtype=torch.float64)])
    pos, glob = forward_kinematics(chain(), rotations, torch.tensor([5.0, 0, 0], dtype=torch.float64))
    # a = root + Rz90 (0,1,0) = (5,0,0) + (-1,0,0); b = a + Rz180 (2,0,0) = (4,0,0) + (-2,0,0)
    assert torch.allclose(
        pos, torch.tensor([[5.0, 0, 0], [4, 0, 0], [2, 0, 0]], dtype=torch.float64), atol=1e-12
    )
    site = end_site_positions(chain(), pos, glob)
    assert torch.allclose(site, torch.tensor([[2.0, 0, 1]], dtype=torch.float64), atol=1e-12)


def test_fk_is_batched_and_differentiable() -> None:
    sk = smpl22_skeleton()
    q = torch.nn.functional.normalize(torch.randn(2, 5, 22, 4, dtype=torch.float64), dim=-1).requires_grad_()
    root = torch.randn(2, 5, 3, dtype=torch.float64)
    pos, _ = forward_kinematics(sk, quat_to_matrix(q), root)
    single, _ = forward_kinematics(sk, quat_to_matrix(q[1, 3]), root[1, 3])
    assert torch.allclose(pos[1, 3], single)
    pos.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_bone_lengths_are_invariant_under_rotations() -> None:
    sk = smpl22_skeleton()
    q = torch.nn.functional.normalize(torch.randn(50, 22, 4, dtype=torch.float64), dim=-1)
    pos, _ = forward_kinematics(sk, quat_to_matrix(q), torch.randn(50, 3, dtype=torch.float64))
    lengths = (pos[:, 1:] - pos[:, list(sk.parents[1:])]).norm(dim=-1)
    assert torch.allclose(lengths, torch.tensor(sk.bone_lengths()).expand(50, 21), atol=1e-12)


@pytest.mark.parametrize(
    ("name", "side", "mirror"),
    [
        ("Hand_L", "left", "Hand_R"),
        ("UpperLeg_R", "right", "UpperLeg_L"),
        ("LeftArm", "left", "RightArm"),
        ("right_shoulder", "right", "left_shoulder"),
        ("l_hip", "left", "r_hip"),
        ("joint_Root", None, None),
        ("LowerArm", None, None),
        ("Spine", None, None),
    ],
)
def test_sides_and_mirror_names(name: str, side: str | None, mirror: str | None) -> None:
    from mofusion.skeleton import _mirror_name

    assert joint_side(name) == side
    assert _mirror_name(name) == mirror


def test_mirror_pairs_of_smpl() -> None:
    sk = smpl22_skeleton()
    pairs = {(sk.names[a], sk.names[b]) for a, b in sk.mirror_bone_pairs()}
    assert ("left_knee", "right_knee") in pairs and ("left_wrist", "right_wrist") in pairs
    assert len(pairs) == 8  # hip, knee, ankle, foot, collar, shoulder, elbow, wrist; nothing central
    assert sk.mirror_map()[sk.index("spine1")] == sk.index("spine1")


def test_invalid_skeletons_are_rejected() -> None:
    with pytest.raises(ValueError):
        Skeleton(("a", "b"), (-1, 1), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        Skeleton(("a", "a"), (-1, 0), np.zeros((2, 3)))
    with pytest.raises(MofusionError):
        chain().index("nope")


def test_without_root_folds_the_offset() -> None:
    folded = chain().without_root()
    assert folded.names == ("a", "b") and folded.parents == (-1, 0)
    assert folded.end_sites == (EndSite(1, (0, 0, 1)),)


def test_serialisation_round_trip() -> None:
    sk = chain()
    assert Skeleton.from_dict(sk.to_dict()) == sk


def test_ik_recovers_positions_from_perturbed_rotations() -> None:
    from mofusion.ik import fit_rotations

    sk = smpl22_skeleton()
    q = torch.nn.functional.normalize(torch.randn(30, 22, 4, dtype=torch.float64), dim=-1)
    truth = quat_to_matrix(q)
    root = torch.randn(30, 3, dtype=torch.float64)
    targets, _ = forward_kinematics(sk, truth, root)
    noisy = quat_to_matrix(torch.nn.functional.normalize(q + 0.05 * torch.randn_like(q), dim=-1))
    before = (forward_kinematics(sk, noisy, root + 0.02)[0] - targets).norm(dim=-1).mean()
    fitted, fitted_root = fit_rotations(sk, noisy, root + 0.02, targets, iterations=300, anchor=0.0)
    after = (forward_kinematics(sk, fitted, fitted_root)[0] - targets).norm(dim=-1).mean()
    assert before > 0.02 and after < 0.1 * before


def test_ik_adam_steps_equal_torch_adam() -> None:
    """The IK's hand-written Adam (no torch._dynamo import) takes torch.optim.Adam's steps."""
    from mofusion.ik import _Adam

    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    ours = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    ref = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    adam, reference = _Adam([ours], lr=0.1), torch.optim.Adam([ref], lr=0.1)
    for _ in range(20):
        adam.step(torch.autograd.grad(((ours - target) ** 4).sum(), [ours]))
        reference.zero_grad()
        ((ref - target) ** 4).sum().backward()
        reference.step()
    assert torch.allclose(ours, ref, atol=1e-12)
    assert not torch.allclose(ours, torch.zeros(3, dtype=torch.float64))
