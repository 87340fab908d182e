"""Editing by constraint: known parts of a motion are held while the model fills in the rest.

A constraint says which frames, joints, or the root trajectory are known. It becomes a mask over
the feature vector (True = known), built from one table that says, for every feature channel,
which joint it belongs to and whether it describes one frame (a pose) or the step to the next frame
(a velocity, a contact). A pose channel is known on a known frame; a step channel only when both
frames of the step are known, so that the last known frame before a gap does not give away the
first generated one.

Two ways to sample with a constraint (:func:`mofusion.diffusion.sample_loop` takes either):

- ``"replace"`` (MoFusion, EDGE, MDM): after every denoising step the known part of ``x_{t-1}`` is
  replaced by ``q_sample(known, t-1)``, and by ``known`` itself at the end;
- ``"condition"``: a model trained with random masks receives the known values and the mask as
  extra input channels at every step, so it sees the constraint directly;
- ``"both"``: the two together, the default for models trained with masks. Conditioning alone does
  not reproduce the known values (they reach the output only through the U-Net's first stage,
  narrower than the feature vector); the replacement makes them exact and the conditioning makes
  the rest fit them (measured: bench/results/bandai2-inbetween).

A model trained with ``denoiser.interpolation_residual`` diffuses the residual to
:func:`interpolate_known`, the per-feature linear interpolation of the known values, and takes that
interpolation as its known-values input: it learns only what interpolation misses, and a known value
is a residual of exactly zero (so ``"replace"`` alone, which would hide the base from it, is refused).

:meth:`mofusion.pipeline.MotionPipeline.edit` turns a request on a :class:`~mofusion.motion.Motion`
into a new motion: known frames and joints are copied from the input (so a BVH keeps its values),
the generated parts are decoded, fitted by IK, and their root path is bent so that it meets the known
frames exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from .errors import MofusionError
from .motion import Motion
from .representation import FeatureSpec

EditMethod = Literal["replace", "condition", "both"]
BODY_PARTS = (
    "upper-body",
    "lower-body",
    "arms",
    "legs",
    "left-arm",
    "right-arm",
    "left-leg",
    "right-leg",
    "head",
)


# -- which joint, and which kind of quantity, every feature channel is --------------------------------


@dataclass(frozen=True)
class ChannelTable:
    """Per feature channel: the joint it describes (-1: the root trajectory) and whether it is a
    step quantity (velocity, contact: depends on the next frame too)."""

    joint: Tensor  # (C,) int64
    step: Tensor  # (C,) bool

    @classmethod
    def of(cls, spec: FeatureSpec) -> ChannelTable:
        sl = spec.slices
        num_joints = spec.num_joints
        joint = torch.full((spec.dim,), -1, dtype=torch.int64)
        step = torch.zeros(spec.dim, dtype=torch.bool)
        step[sl["root_yaw_velocity"]] = True
        step[sl["root_xz_velocity"]] = True
        joint[sl["local_positions"]] = torch.arange(1, num_joints).repeat_interleave(3)
        first_rotated = 0 if spec.rotation_source == "local" else 1
        joint[sl["rotations"]] = torch.arange(first_rotated, num_joints).repeat_interleave(6)
        joint[sl["velocities"]] = torch.arange(num_joints).repeat_interleave(3)
        step[sl["velocities"]] = True
        feet = spec.skeleton.indices(spec.left_foot + spec.right_foot)
        joint[sl["contacts"]] = torch.tensor(feet, dtype=torch.int64)
        step[sl["contacts"]] = True
        return cls(joint, step)


def feature_mask(
    table: ChannelTable,
    frames: Tensor,
    joints: Tensor | None = None,
    trajectory: Tensor | None = None,
) -> Tensor:
    """Known channels ``(B, T, C)`` from known ``frames (B, T)``, known ``joints (B, J)`` (on all
    frames) and a known root ``trajectory (B,)`` (on all frames)."""
    frames = frames.bool()
    device = frames.device
    joint, step = table.joint.to(device), table.step.to(device)
    pairs = torch.zeros_like(frames)
    pairs[:, :-1] = frames[:, :-1] & frames[:, 1:]
    known = torch.where(step[None, None, :], pairs[..., None], frames[..., None])  # (B, T, C)
    if joints is not None:
        per_channel = torch.zeros(frames.shape[0], joint.shape[0], dtype=torch.bool, device=device)
        has_joint = joint >= 0
        per_channel[:, has_joint] = joints.bool()[:, joint[has_joint]]
        known = known | per_channel[:, None, :]
    if trajectory is not None:
        known = known | (trajectory.bool()[:, None, None] & (joint < 0)[None, None, :])
    return known


# -- body parts from the skeleton ---------------------------------------------------------------------


def _subtree(parents: tuple[int, ...], root: int) -> list[int]:
    out = [root]
    for j in range(root + 1, len(parents)):
        if parents[j] in out:
            out.append(j)
    return out


def _branch_child(parents: tuple[int, ...], joint: int) -> int:
    """The ancestor of ``joint`` (or itself) whose parent has several children: where a limb starts."""
    children = {p: sum(1 for q in parents if q == p) for p in set(parents)}
    while parents[joint] >= 0 and children.get(parents[joint], 0) < 2:
        joint = parents[joint]
    return joint


def body_part_joints(spec: FeatureSpec, part: str) -> list[int]:
    """Joint indices of a named body part, derived from the spec's hip and shoulder joints."""
    sk = spec.skeleton
    parents = sk.parents
    r_hip, l_hip, r_sh, l_sh = sk.indices(spec.face_joints)
    legs = {"right": _subtree(parents, r_hip), "left": _subtree(parents, l_hip)}
    arms = {
        "right": _subtree(parents, _branch_child(parents, r_sh)),
        "left": _subtree(parents, _branch_child(parents, l_sh)),
    }
    all_legs = set(legs["right"]) | set(legs["left"])
    all_arms = set(arms["right"]) | set(arms["left"])
    upper = [j for j in range(1, sk.num_joints) if j not in all_legs]
    chest = parents[_branch_child(parents, r_sh)]
    head = [
        j
        for j in range(sk.num_joints)
        if j in upper and j not in all_arms and j not in _ancestors(parents, chest)
    ]
    parts = {
        "upper-body": upper,
        "lower-body": [0, *sorted(all_legs)],
        "arms": sorted(all_arms),
        "legs": sorted(all_legs),
        "left-arm": arms["left"],
        "right-arm": arms["right"],
        "left-leg": legs["left"],
        "right-leg": legs["right"],
        "head": [j for j in head if j != chest],
    }
    if part not in parts:
        raise MofusionError(f"unknown body part {part!r}; the skeleton has: {', '.join(BODY_PARTS)}")
    if not parts[part]:
        raise MofusionError(f"the skeleton ({sk.describe()}) has no joints for {part!r}")
    return sorted(parts[part])


def parse_joints(spec: FeatureSpec, text: str) -> list[int]:
    """Joints named by body parts and joint names, comma-separated: ``"upper-body"``, ``"left-arm,Head"``."""
    joints: set[int] = set()
    for token in (t.strip() for t in text.split(",")):
        if not token:
            raise MofusionError(f"--regenerate: empty name in {text!r}")
        if token in BODY_PARTS:
            joints.update(body_part_joints(spec, token))
        elif token in spec.skeleton.names:
            joints.add(spec.skeleton.index(token))
        else:
            raise MofusionError(
                f"unknown body part {token!r}; use {', '.join(BODY_PARTS)} or a joint name of the skeleton"
            )
    return sorted(joints)


def _ancestors(parents: tuple[int, ...], joint: int) -> set[int]:
    out = {joint}
    while parents[joint] >= 0:
        joint = parents[joint]
        out.add(joint)
    return out


def parse_ranges(text: str, num_frames: int, what: str = "--keep") -> np.ndarray:
    """Known frames from ``"0-30,120-150,200"`` (inclusive ranges, 0-based) -> bool ``(num_frames,)``."""
    known = np.zeros(num_frames, dtype=bool)
    if not text.strip():
        raise MofusionError(f"{what} is empty; give ranges such as 0-30,120-150")
    spans = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise MofusionError(f"{what}: empty range in {text!r}")
        lo, sep, hi = part.partition("-")
        try:
            start, stop = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise MofusionError(f"{what}: {part!r} is not a frame or a range like 10-20") from None
        if start > stop:
            raise MofusionError(f"{what}: range {part!r} runs backwards")
        if start < 0 or stop >= num_frames:
            raise MofusionError(f"{what}: range {part!r} is outside the clip's frames 0-{num_frames - 1}")
        for other in spans:
            if start <= other[1] and other[0] <= stop:
                raise MofusionError(f"{what}: ranges {other[0]}-{other[1]} and {part} overlap")
        spans.append((start, stop))
        known[start : stop + 1] = True
    return known


# -- training masks ------------------------------------------------------------------------------------


def interpolate_known(values: Tensor, known_mask: Tensor) -> Tensor:
    """Per feature, the linear interpolation across time (the last axis) of its known values: held
    constant before its first and after its last known frame, zero (the normalised mean) where it is
    never known. Equals ``values`` wherever ``known_mask`` is True.

    The base that models with ``denoiser.interpolation_residual`` add their sample to.
    """
    num_frames = values.shape[-1]
    frame = torch.arange(num_frames, device=values.device).expand(known_mask.shape)
    before = torch.where(known_mask, frame, -1).cummax(-1).values  # last known frame at or before
    after = torch.where(known_mask, frame, num_frames).flip(-1).cummin(-1).values.flip(-1)
    has_before, has_after = before >= 0, after < num_frames
    value_before = values.gather(-1, before.clamp_min(0))
    value_after = values.gather(-1, after.clamp_max(num_frames - 1))
    share = (frame - before).to(values.dtype) / (after - before).clamp_min(1).to(values.dtype)
    between = value_before + (value_after - value_before) * share
    held = torch.where(has_after, value_after, torch.zeros_like(values))
    held = torch.where(has_before, value_before, held)
    return torch.where(has_before & has_after, between, held)


def random_masks(
    table: ChannelTable,
    spec: FeatureSpec,
    batch: int,
    num_frames: int,
    generator: torch.Generator,
    unconditional: float = 0.2,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Random training masks ``(B, T, C)``: nothing known (``unconditional``), or one of
    :data:`mofusion.config.MASK_KINDS` drawn with ``weights`` (None: the first five equally often):
    a known prefix, known ends around a gap, scattered keyframes, every joint but a body part, the root
    trajectory alone, or a few context frames and one keyframe after a gap with nothing known beyond it (the
    LAFAN1 in-betweening task, which the gap kind covers only when its gap ends the window)."""
    frames = torch.zeros(batch, num_frames, dtype=torch.bool)
    joints = torch.zeros(batch, spec.num_joints, dtype=torch.bool)
    trajectory = torch.zeros(batch, dtype=torch.bool)
    if weights is None or list(weights) == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]:
        kinds = torch.randint(0, 5, (batch,), generator=generator)  # the draws of models trained before
    else:
        probs = torch.tensor([float(w) for w in weights], dtype=torch.float64)
        kinds = torch.multinomial(probs, batch, replacement=True, generator=generator)
    active = torch.rand(batch, generator=generator) >= unconditional
    parts = [
        body_part_joints(spec, p)
        for p in ("upper-body", "lower-body", "arms", "legs", "left-arm", "right-arm")
    ]
    for b in range(batch):
        if not active[b]:
            continue
        kind = int(kinds[b])
        draw = torch.rand(3, generator=generator)
        if kind == 0:  # continuation: a known prefix
            frames[b, : max(1, int(draw[0] * num_frames * 0.6))] = True
        elif kind == 1:  # in-betweening: known start and end around a gap of 1 to 80 % of the window
            gap = max(1, int(draw[0] * num_frames * 0.8))
            start = int(draw[1] * (num_frames - gap))
            frames[b, :start] = True
            frames[b, start + gap :] = True
            if start == 0:
                frames[b, 0] = True
        elif kind == 2:  # scattered keyframes
            frames[b] = torch.rand(num_frames, generator=generator) < 0.02 + 0.2 * draw[0]
        elif kind == 3:  # regenerate a body part: everything else known
            part = parts[int(draw[0] * len(parts)) % len(parts)]
            joints[b] = True
            joints[b, part] = False
            trajectory[b] = bool(0 not in part)
        elif kind == 4:  # follow a root trajectory
            trajectory[b] = True
        else:  # 1 to 20 context frames, a gap of 1 to 60 % of the window, one keyframe, then nothing
            context = 1 + int(draw[0] * min(20, num_frames // 4))
            gap = 1 + int(draw[1] * max(1, int(num_frames * 0.6)))
            room = num_frames - context - gap
            if room < 1:
                gap = max(1, num_frames - context - 1)
                room = 1
            start = 0 if draw[2] < 0.5 else int(torch.randint(0, room, (1,), generator=generator))
            frames[b, start : start + context] = True
            frames[b, min(num_frames - 1, start + context + gap)] = True
    return feature_mask(table, frames, joints, trajectory)


# -- editing a Motion ------------------------------------------------------------------------------------


@dataclass
class EditRequest:
    """What to keep from an input (at the model's frame rate) and how many frames to make.

    Args:
        num_frames: length of the result (>= the input's for a continuation).
        frames: ``(num_frames,)`` frames whose whole pose is kept (beyond the input: False).
        motion: the input as a motion on the model's skeleton (from BVH), or None when only
            ``positions`` are known (from .npy): then rotations are generated everywhere.
        positions: ``(T_in, J, 3)`` input joint positions (metres); derived from ``motion`` if None.
        joints: ``(J,)`` joints kept on every input frame (body-part editing).
        trajectory: keep the root path on every input frame.
    """

    num_frames: int
    frames: np.ndarray
    motion: Motion | None = None
    positions: np.ndarray | None = None
    joints: np.ndarray | None = None
    trajectory: bool = False

    def __post_init__(self) -> None:
        if self.positions is None:
            if self.motion is None:
                raise MofusionError("an edit needs an input motion or joint positions")
            self.positions = self.motion.positions()
        self.frames = np.asarray(self.frames, dtype=bool)
        if len(self.frames) != self.num_frames:
            raise MofusionError("the known-frame mask must cover every output frame")
        if self.input_frames > self.num_frames:
            raise MofusionError("the result cannot be shorter than the input")

    @property
    def input_frames(self) -> int:
        assert self.positions is not None
        return int(self.positions.shape[0])

    @property
    def root_known(self) -> np.ndarray:
        """Frames whose root position is given: known frames, or every input frame when the
        trajectory or the root joint is kept."""
        known = self.frames.copy()
        if self.trajectory or (self.joints is not None and self.joints[0]):
            known[: self.input_frames] = True
        return known


@dataclass
class EditResult:
    """An edited motion and its joint positions (the input's exactly on known frames)."""

    motion: Motion
    positions: np.ndarray


def _yaw(matrices: np.ndarray) -> np.ndarray:
    """Heading angle about +Y of rotation matrices ``(..., 3, 3)``: where their +Z axis points."""
    forward = matrices[..., :, 2]
    return np.arctan2(forward[..., 0], forward[..., 2])


def _facing_yaw(representation, positions: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    from .rotations import quat_to_matrix

    facing = representation.facing(torch.from_numpy(positions))
    return -_yaw(quat_to_matrix(facing).numpy())  # facing maps world to the facing frame: invert


def eased_interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp`` with a smoothstep (``3s^2 - 2s^3``) between neighbouring points: the curve
    leaves and reaches each point with zero slope, so a correction spread over a gap adds no
    velocity change where the gap meets known frames (linear interpolation adds a kink there)."""
    u = np.interp(x, xp, np.arange(len(xp), dtype=np.float64))
    k = np.floor(u)
    s = u - k
    return np.interp(k + s * s * (3.0 - 2.0 * s), np.arange(len(xp)), fp)


def align_trajectory(
    generated: Motion,
    reference_positions: np.ndarray,
    known: np.ndarray,
    representation,  # type: ignore[no-untyped-def]
) -> Motion:
    """Move and turn ``generated`` so that it meets the reference joint positions on ``known`` frames.

    The corrections (ground translation, heading) are measured on the known frames and
    interpolated over the frames between them with zero slope at both ends (held before the first
    and after the last; see :func:`eased_interp`), which bends the generated root path to end
    exactly where the next known frame starts without a kink where it leaves or meets them.
    """
    idx = np.flatnonzero(known[: len(reference_positions)])
    if len(idx) == 0:
        return generated
    gen_pos = generated.positions()
    ref_pos = np.asarray(reference_positions, dtype=np.float64)
    gen_yaw = _facing_yaw(representation, gen_pos)
    ref_yaw = _facing_yaw(representation, ref_pos)
    d_yaw = np.unwrap(ref_yaw[idx] - gen_yaw[idx])
    frames = np.arange(generated.num_frames)
    yaw = eased_interp(frames, idx, d_yaw)
    # turn each frame about its own root by the heading correction, then translate
    turn = Rotation.from_euler("y", yaw[:, None])
    root = generated.root_positions.copy()
    turned_root = np.zeros_like(root)
    # the path is rebuilt from turned steps so that walking stays walking
    steps = np.diff(root, axis=0)
    turned_steps = turn[1:].apply(steps)
    turned_root[0] = root[0]
    turned_root[1:] = root[0] + np.cumsum(turned_steps, axis=0)
    offset_known = ref_pos[idx, 0] - turned_root[idx]
    offset = np.stack([eased_interp(frames, idx, offset_known[:, k]) for k in range(3)], axis=1)
    offset[:, 1] = 0.0
    new_root = turned_root + offset
    new_root[:, 1] = root[:, 1]
    rotations = generated.rotations.copy()
    root_rot = Rotation.from_quat(np.roll(rotations[:, 0], -1, axis=-1))
    rotations[:, 0] = np.roll((turn * root_rot).as_quat(), 1, axis=-1)
    return Motion(generated.skeleton, rotations, new_root, generated.fps)
