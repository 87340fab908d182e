"""Inverse kinematics for export: rotations that put the joints where the model placed them.

The feature vector holds joint positions *and* rotations. They agree on real data, but a model's
two predictions differ a little, and forward kinematics through a chain of slightly wrong rotations
moves the feet by centimetres: a BVH made from raw rotations skates where the positions do not.
:func:`fit_rotations` starts from the predicted rotations and adjusts them (and the root) by
gradient descent until forward kinematics reproduces the predicted positions; a weak pull towards
the start keeps what positions cannot tell (twist about a bone, end effectors' orientation).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .rotations import matrix_to_6d, quat_between, quat_to_matrix, rot6d_to_matrix
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

    In float32: the fit is a hundred steps of small operations on every frame, and float64 made
    them slower (a 3-s in-betweening 0.30 -> 0.25 s end to end on 2 CPU threads) for joints that
    moved by at most 0.04 mm, far below what the fit corrects (centimetres).
    """
    with torch.enable_grad():
        start = matrix_to_6d(rotations.detach().float())
        d6 = start.clone().requires_grad_(True)
        position = root.detach().float().clone().requires_grad_(True)
        goal = targets.detach().float()
        adam = _Adam([d6, position], lr)
        for _ in range(iterations):
            joints, _ = forward_kinematics(skeleton, rot6d_to_matrix(d6), position)
            loss = ((joints - goal) ** 2).sum(-1).mean() + anchor * ((d6 - start) ** 2).mean()
            adam.step(torch.autograd.grad(loss, [d6, position]))
    return rot6d_to_matrix(d6.detach().double()), position.detach().double()  # as before: float64 out


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


def rotations_from_positions(skeleton: Skeleton, positions: Tensor) -> tuple[Tensor, Tensor]:
    """Local rotation matrices ``(..., T, J, 3, 3)`` and root positions that pose ``skeleton`` like
    joint positions ``(..., T, J, 3)``: the start for :func:`fit_rotations` when a motion has
    positions only (dance keypoints, HumanML3D-style features).

    Top-down, each joint's world rotation turns its rest bones onto the observed ones: the best
    rotation for all its children at once (Kabsch) when they span a plane (hips, shoulders, ankle to
    toe and heel), else the smallest turn of the parent's orientation that aims its longest child
    (a chain, or children in one line). Leaves keep their parent's orientation.
    """
    pos = positions.double()
    offsets = torch.tensor(np.array(skeleton.offsets), dtype=pos.dtype, device=pos.device)
    batch = pos.shape[:-2]
    eye = torch.eye(3, dtype=pos.dtype, device=pos.device).expand(batch + (3, 3))
    world: list[Tensor] = []
    local: list[Tensor] = []
    for j, parent in enumerate(skeleton.parents):
        parent_world = world[parent] if parent >= 0 else eye
        children = skeleton.children(j)
        rotation = parent_world
        if children:
            rest = offsets[children]  # (K, 3)
            seen = pos[..., children, :] - pos[..., j : j + 1, :]  # (..., K, 3)
            spread = torch.linalg.svdvals(rest)
            if len(children) >= 2 and spread[1] > 0.2 * spread[0]:
                cov = torch.einsum("kc,...kd->...dc", rest, seen)  # sum_k seen_k rest_k^T
                u, _, vh = torch.linalg.svd(cov)
                sign = torch.sign(torch.linalg.det(u @ vh))
                fix = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1))
                rotation = u @ fix @ vh
            else:
                longest = int(torch.argmax(rest.norm(dim=-1)))
                aimed = parent_world @ rest[longest]  # the bone as the parent's orientation holds it
                turn = quat_to_matrix(quat_between(aimed, seen[..., longest, :]))
                rotation = turn @ parent_world
        world.append(rotation)
        local.append(parent_world.transpose(-1, -2) @ rotation)
    return torch.stack(local, dim=-3), pos[..., 0, :]


def skeleton_from_positions(skeleton: Skeleton, local_positions: Tensor) -> Skeleton:
    """Rest offsets that fit positions-only motions ``(..., T, J, 3)`` given in the dancer's facing
    frame: every bone gets its median length; the bones that leave a branching joint (pelvis to hips
    and spine, neck to shoulders and head, ankle to toe and heel) also keep their median direction,
    so that those rigid groups can be posed exactly; chains keep the skeleton's rest direction (a
    T-pose for arms and legs). Keypoint data has no rest pose of its own to read these from."""
    pos = local_positions.detach().double().reshape((-1,) + tuple(local_positions.shape[-2:]))
    parents = list(skeleton.parents)
    offsets = np.array(skeleton.offsets, dtype=np.float64)
    for j in range(1, skeleton.num_joints):
        bones = (pos[:, j] - pos[:, parents[j]]).numpy()
        length = float(np.median(np.linalg.norm(bones, axis=-1)))
        if len(skeleton.children(parents[j])) >= 2:
            direction = np.median(bones, axis=0)
        else:
            direction = offsets[j]
        offsets[j] = direction / max(float(np.linalg.norm(direction)), 1e-12) * length
    return skeleton.with_offsets(offsets)
