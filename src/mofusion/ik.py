"""Inverse kinematics for export: rotations that put the joints where the model placed them.

The feature vector holds joint positions *and* rotations. They agree on real data, but a model's
two predictions differ a little, and forward kinematics through a chain of slightly wrong rotations
moves the feet by centimetres: a BVH made from raw rotations skates where the positions do not.
:func:`fit_rotations` starts from the predicted rotations and adjusts them (and the root) by
gradient descent until forward kinematics reproduces the predicted positions; a weak pull towards
the start keeps what positions cannot tell (twist about a bone, end effectors' orientation).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rotations import matrix_to_6d, rot6d_to_matrix
from .skeleton import Skeleton, forward_kinematics


def fit_rotations(
    skeleton: Skeleton,
    rotations: Tensor,
    root: Tensor,
    targets: Tensor,
    iterations: int = 150,
    lr: float = 0.01,
    anchor: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """Local rotations ``(T, J, 3, 3)`` and root positions ``(T, 3)`` whose FK matches ``targets (T, J, 3)``.

    Args:
        skeleton: bone offsets (metres).
        rotations: initial local rotation matrices.
        root: initial root positions.
        targets: joint positions to reach.
        iterations: Adam steps.
        lr: Adam step size (on 6-D rotation components and metres).
        anchor: weight of the squared distance of the 6-D rotations to their start.
    """
    with torch.enable_grad():
        start = matrix_to_6d(rotations.detach().double())
        d6 = start.clone().requires_grad_(True)
        position = root.detach().double().clone().requires_grad_(True)
        goal = targets.detach().double()
        optimizer = torch.optim.Adam([d6, position], lr=lr)
        for _ in range(iterations):
            optimizer.zero_grad()
            joints, _ = forward_kinematics(skeleton, rot6d_to_matrix(d6), position)
            loss = ((joints - goal) ** 2).sum(-1).mean() + anchor * ((d6 - start) ** 2).mean()
            loss.backward()
            optimizer.step()
    return rot6d_to_matrix(d6.detach()), position.detach()
