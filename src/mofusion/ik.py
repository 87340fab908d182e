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
        adam = _Adam([d6, position], lr)
        for _ in range(iterations):
            joints, _ = forward_kinematics(skeleton, rot6d_to_matrix(d6), position)
            loss = ((joints - goal) ** 2).sum(-1).mean() + anchor * ((d6 - start) ** 2).mean()
            adam.step(torch.autograd.grad(loss, [d6, position]))
    return rot6d_to_matrix(d6.detach()), position.detach()


class _Adam:
    """Adam (Kingma & Ba 2015, Alg. 1, the defaults beta = (0.9, 0.999), eps = 1e-8) written out:
    ``torch.optim.Adam`` imports torch._dynamo on construction, 1.5 s of every export on a CPU."""

    def __init__(self, params: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.params, self.lr, self.betas = params, lr, betas
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.k = 0

    @torch.no_grad()
    def step(self, grads: tuple[Tensor, ...]) -> None:
        self.k += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**self.k)).sqrt_().add_(1e-8)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.k))
