"""The redundant motion feature vector of HumanML3D (Guo et al. 2022), for any skeleton.

Per frame ``i`` (from a clip of ``T`` frames, giving ``T - 1`` feature frames), in this order:

=======================  =============  ==========================================================
block                    width          meaning
=======================  =============  ==========================================================
``root_yaw_velocity``    1              yaw change to the next frame (half-angle, radians)
``root_xz_velocity``     2              root displacement to the next frame, in the next frame's
                                        facing frame
``root_height``          1              root height (Y)
``local_positions``      3 (J - 1)      joint positions relative to the root's ground point, in the
                                        facing frame
``rotations``            6 R            6-D joint rotations (see below)
``velocities``           3 J            joint displacements to the next frame, in the facing frame
``contacts``             F              1 where a foot joint moves less than the contact speed
=======================  =============  ==========================================================

The *facing frame* is the yaw that turns the body's forward direction (up x (hip axis + shoulder
axis), Gaussian-smoothed over time) onto +Z. Two rotation sources fill the 6-D block:

- ``"local"`` (R = J): the file's own local joint rotations, the root's expressed in the facing
  frame. Exact for BVH data, including twist, so decoding gives back the BVH rotations.
- ``"humanml3d"`` (R = J - 1): HumanML3D's inverse kinematics from positions alone (a shortest-arc
  rotation per bone, each chain starting from the facing rotation). This is what the data set
  stores; it is the only choice for positions-only data.

With the ``smpl22_humanml3d`` preset the vector is HumanML3D's 263-wide layout exactly. That preset
sets ``humanml3d_quirks``, which reproduces two details of the released data: the hip term of the
facing direction enters with a swapped sign, and the facing of frame 0 is the identity. Decoding
``new_joint_vecs`` gives ``new_joints`` to float error; encoding ``new_joints`` gives
``new_joint_vecs`` back except within the smoothing window (4 sigma = 80 frames) of the end, which
saw a last frame that ``new_joints`` does not keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import MofusionError
from .motion import Motion
from .rotations import (
    matrix_to_quat,
    quat_between,
    quat_conj,
    quat_mul,
    quat_rotate,
    quat_to_6d,
    quat_to_matrix,
    rot6d_to_matrix,
)
from .skeleton import Skeleton

RotationSource = Literal["local", "humanml3d"]
BLOCKS = (
    "root_yaw_velocity",
    "root_xz_velocity",
    "root_height",
    "local_positions",
    "rotations",
    "velocities",
    "contacts",
)


@dataclass(frozen=True, eq=False)
class FeatureSpec:
    """Everything that defines the feature vector of one skeleton.

    Args:
        skeleton: the skeleton (lengths in metres by convention).
        fps: frame rate the features are computed at (velocities are per frame).
        face_joints: names of the right hip, left hip, right shoulder and left shoulder.
        left_foot: foot joints of the left side whose contacts are stored (e.g. ankle, toe).
        right_foot: the same on the right side.
        contact_speed: a foot joint moving slower than this (length units per second) is in contact.
        facing_smoothing: standard deviation, in seconds, of the Gaussian that smooths the forward
            direction over time (HumanML3D: 20 frames at 20 fps = 1 s).
        rotation_source: ``"local"`` or ``"humanml3d"`` (see the module docstring).
        humanml3d_quirks: reproduce the released HumanML3D data bit for bit (see the module docstring).
        rest_directions: ``(J, 3)`` rest direction of each joint's incoming bone, used by the
            ``"humanml3d"`` inverse kinematics (default: the skeleton's normalised offsets).
        chains: kinematic chains for that inverse kinematics; each chain starts from the facing
            rotation (default: derived from the skeleton, first child continuing a chain).
    """

    skeleton: Skeleton
    fps: float
    face_joints: tuple[str, str, str, str]
    left_foot: tuple[str, ...]
    right_foot: tuple[str, ...]
    contact_speed: float
    facing_smoothing: float = 1.0
    rotation_source: RotationSource = "local"
    humanml3d_quirks: bool = False
    rest_directions: np.ndarray | None = None
    chains: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.rotation_source not in ("local", "humanml3d"):
            raise MofusionError(
                f"rotation_source must be 'local' or 'humanml3d', got {self.rotation_source!r}"
            )
        object.__setattr__(self, "face_joints", tuple(self.face_joints))
        object.__setattr__(self, "left_foot", tuple(self.left_foot))
        object.__setattr__(self, "right_foot", tuple(self.right_foot))
        if len(self.face_joints) != 4:
            raise MofusionError(
                "face_joints needs four names: right hip, left hip, right shoulder, left shoulder"
            )
        for name in self.face_joints + self.left_foot + self.right_foot:
            self.skeleton.index(name)
        if self.rest_directions is None:
            offsets = self.skeleton.offsets.copy()
            norms = np.linalg.norm(offsets, axis=-1, keepdims=True)
            directions = np.where(norms > 1e-9, offsets / np.maximum(norms, 1e-12), 0.0)
            object.__setattr__(self, "rest_directions", directions)
        else:
            object.__setattr__(self, "rest_directions", np.asarray(self.rest_directions, dtype=np.float64))
        if self.chains is None:
            object.__setattr__(self, "chains", _default_chains(self.skeleton))
        else:
            object.__setattr__(self, "chains", tuple(tuple(int(j) for j in c) for c in self.chains))

    # -- layout ---------------------------------------------------------------------------------
    @property
    def num_joints(self) -> int:
        return self.skeleton.num_joints

    @property
    def num_rotations(self) -> int:
        return self.num_joints if self.rotation_source == "local" else self.num_joints - 1

    @property
    def widths(self) -> dict[str, int]:
        j = self.num_joints
        return {
            "root_yaw_velocity": 1,
            "root_xz_velocity": 2,
            "root_height": 1,
            "local_positions": 3 * (j - 1),
            "rotations": 6 * self.num_rotations,
            "velocities": 3 * j,
            "contacts": len(self.left_foot) + len(self.right_foot),
        }

    @property
    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, width in self.widths.items():
            out[name] = slice(start, start + width)
            start += width
        return out

    @property
    def dim(self) -> int:
        return sum(self.widths.values())

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.widths.items()) + f" = {self.dim}"

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "skeleton": self.skeleton.to_dict(),
            "fps": self.fps,
            "face_joints": list(self.face_joints),
            "left_foot": list(self.left_foot),
            "right_foot": list(self.right_foot),
            "contact_speed": self.contact_speed,
            "facing_smoothing": self.facing_smoothing,
            "rotation_source": self.rotation_source,
            "humanml3d_quirks": self.humanml3d_quirks,
            "rest_directions": np.asarray(self.rest_directions).tolist(),
            "chains": [list(c) for c in self.chains or ()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        data = dict(data)
        data["skeleton"] = Skeleton.from_dict(data["skeleton"])
        data["rest_directions"] = np.asarray(data["rest_directions"])
        data["chains"] = tuple(tuple(c) for c in data["chains"])
        for key in ("face_joints", "left_foot", "right_foot"):
            data[key] = tuple(data[key])
        return cls(**data)

    def same_as(self, other: FeatureSpec) -> bool:
        return self.to_dict() == other.to_dict()


def _default_chains(skeleton: Skeleton) -> tuple[tuple[int, ...], ...]:
    """Split the tree into chains; a joint's first child continues its chain, others start new ones."""
    chains: list[list[int]] = []

    def walk(chain: list[int]) -> None:
        kids = skeleton.children(chain[-1])
        if not kids:
            chains.append(chain)
            return
        if chain[-1] == 0:
            for kid in kids:
                walk([0, kid])
            return
        walk(chain + [kids[0]])
        for kid in kids[1:]:
            walk([chain[-1], kid])

    walk([0])
    return tuple(tuple(c) for c in chains if len(c) > 1)


# -- helpers ----------------------------------------------------------------------------------------


def least_squares_path(
    anchors: np.ndarray,
    steps: np.ndarray,
    weight: float,
    pinned: np.ndarray | None = None,
    smoothing: float = 0.0,
) -> np.ndarray:
    """Paths ``P`` ``(N, T, K)`` minimising ``sum |P_t - A_t|^2 + weight sum |P_{t+1} - P_t - D_t|^2
    + smoothing sum |P_{t+1} - 2 P_t + P_{t-1}|^2``.

    ``anchors`` ``A`` is ``(N, T, K)``, ``steps`` ``D`` is ``(N, T - 1, K)``; a ``pinned`` frame
    (``(N, T)`` bool) keeps its anchor. The normal equations are a symmetric banded system per
    path (tridiagonal, pentadiagonal with ``smoothing``), solved in O(T). The acceleration term
    spans pinned and free frames alike, so a free frame next to a pinned one is drawn towards the
    pinned frames' velocity: a generated stretch enters and leaves known frames without a kink.
    """
    from scipy.linalg import solve_banded

    n, frames, _ = anchors.shape
    out = np.empty_like(anchors, dtype=np.float64)
    w = float(weight)
    a = float(smoothing) if frames >= 3 else 0.0
    # the matrix's bands in solve_banded's layout (row u holds the diagonal), the same for every
    # path but for the data weights: tridiagonal, or pentadiagonal with the acceleration term
    u = 2 if a > 0 else 1
    bands = np.zeros((2 * u + 1, frames))
    if frames >= 2:
        bands[u] = w * np.r_[1.0, np.full(frames - 2, 2.0), 1.0]
        bands[u - 1, 1:] = bands[u + 1, :-1] = -w
    if a > 0:
        # the second difference's rows (1, -2, 1) start at columns 0 .. T-3; add a * D2^T D2
        coef, first = (1.0, -2.0, 1.0), np.arange(frames - 2)
        for k in range(3):
            np.add.at(bands[u], first + k, a * coef[k] ** 2)
        for k in range(2):
            np.add.at(bands[u - 1], first + k + 1, a * coef[k] * coef[k + 1])
            np.add.at(bands[u + 1], first + k, a * coef[k] * coef[k + 1])
        np.add.at(bands[0], first + 2, a * coef[0] * coef[2])
        np.add.at(bands[4], first, a * coef[0] * coef[2])
    for b in range(n):
        # a pinned frame's anchor term gets a weight that makes it exact to float precision
        data_weight = np.ones(frames) if pinned is None else np.where(pinned[b], 1e8, 1.0)
        banded = bands.copy()
        banded[u] += data_weight
        rhs = data_weight[:, None] * anchors[b]
        rhs[:-1] -= w * steps[b]
        rhs[1:] += w * steps[b]
        out[b] = solve_banded((u, u), banded, rhs)
    return out


def gaussian_smooth(x: Tensor, sigma: float, dim: int = 0) -> Tensor:
    """Gaussian filter along ``dim`` with edge replication, as ``scipy.ndimage.gaussian_filter1d``
    (``mode='nearest'``, ``truncate=4``) computes it."""
    if sigma <= 0:
        return x
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * taps**2 / sigma**2)
    kernel = kernel / kernel.sum()
    moved = x.movedim(dim, -1)
    shape = moved.shape
    flat = moved.reshape(-1, 1, shape[-1])
    left = flat[..., :1].expand(-1, -1, radius)
    right = flat[..., -1:].expand(-1, -1, radius)
    padded = torch.cat((left, flat, right), dim=-1)
    out = F.conv1d(padded, kernel.view(1, 1, -1))
    return out.reshape(shape).movedim(-1, dim)


_UP = (0.0, 1.0, 0.0)
_FORWARD = (0.0, 0.0, 1.0)


class MotionRepresentation:
    """Encodes motions into the feature vector of a :class:`FeatureSpec` and decodes them back.

    Encoding runs on one clip (time first); decoding is batched over leading dimensions and
    differentiable, so the kinematic losses can run through it.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        sk = spec.skeleton
        self._face = sk.indices(spec.face_joints)
        self._feet = sk.indices(spec.left_foot + spec.right_foot)

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def slices(self) -> dict[str, slice]:
        return self.spec.slices

    # -- encoding -------------------------------------------------------------------------------
    def facing(self, positions: Tensor) -> Tensor:
        """World-to-facing yaw quaternions ``(T, 4)`` of joint positions ``(T, J, 3)``."""
        r_hip, l_hip, r_sh, l_sh = self._face
        if self.spec.humanml3d_quirks:
            across = (positions[:, l_hip] - positions[:, r_hip]) + (positions[:, r_sh] - positions[:, l_sh])
        else:
            across = (positions[:, r_hip] - positions[:, l_hip]) + (positions[:, r_sh] - positions[:, l_sh])
        across = across / across.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        up = positions.new_tensor(_UP).expand_as(across)
        forward = torch.linalg.cross(up, across, dim=-1)
        forward = gaussian_smooth(forward, self.spec.facing_smoothing * self.spec.fps, dim=0)
        forward = forward / forward.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        facing = quat_between(forward, positions.new_tensor(_FORWARD).expand_as(forward))
        if self.spec.humanml3d_quirks:
            facing = facing.clone()
            facing[0] = facing.new_tensor([1.0, 0.0, 0.0, 0.0])
        return facing

    def encode(self, positions: Tensor, rotations: Tensor | None = None) -> Tensor:
        """Features ``(T - 1, C)`` of one clip.

        Args:
            positions: ``(T, J, 3)`` world joint positions, Y up.
            rotations: ``(T, J, 4)`` local joint rotations; required when the rotation source is
                ``"local"``, ignored for ``"humanml3d"``.
        """
        spec = self.spec
        if positions.ndim != 3 or positions.shape[1:] != (spec.num_joints, 3):
            raise MofusionError(f"positions must be (T, {spec.num_joints}, 3), got {tuple(positions.shape)}")
        if positions.shape[0] < 2:
            raise MofusionError("a clip needs at least two frames to compute velocities")
        num_frames, num_joints = positions.shape[:2]
        facing = self.facing(positions)  # (T, 4)
        facing_j = facing[:, None].expand(num_frames, num_joints, 4)

        # 1. root: yaw velocity (half-angle, as arcsin of the relative quaternion's y), xz velocity, height
        relative = quat_mul(facing[1:], quat_conj(facing[:-1]))
        yaw_velocity = torch.arcsin(relative[:, 2:3].clamp(-1.0, 1.0))
        root_step = quat_rotate(facing[1:], positions[1:, 0] - positions[:-1, 0])
        xz_velocity = root_step[:, [0, 2]]
        height = positions[:-1, 0, 1:2]

        # 2. joint positions about the root's ground point, in the facing frame
        ground = positions[:, :1].clone()
        ground[..., 1] = 0.0
        local = quat_rotate(facing_j, positions - ground)
        local_positions = local[:-1, 1:].reshape(num_frames - 1, -1)

        # 3. rotations
        if spec.rotation_source == "local":
            if rotations is None or rotations.shape != (num_frames, num_joints, 4):
                raise MofusionError("the 'local' rotation source needs rotations of shape (T, J, 4)")
            rot = rotations.clone()
            rot[:, 0] = quat_mul(facing, rotations[:, 0])
            rot6d = quat_to_6d(rot)
        else:
            rot6d = quat_to_6d(self._inverse_kinematics(positions, facing))[:, 1:]
        rot6d = rot6d[:-1].reshape(num_frames - 1, -1)

        # 4. velocities in the current frame's facing frame, and foot contacts
        velocities = quat_rotate(facing_j[:-1], positions[1:] - positions[:-1]).reshape(num_frames - 1, -1)
        step = positions[1:, self._feet] - positions[:-1, self._feet]
        threshold = (spec.contact_speed / spec.fps) ** 2
        contacts = ((step * step).sum(-1) < threshold).to(positions.dtype)

        return torch.cat(
            (yaw_velocity, xz_velocity, height, local_positions, rot6d, velocities, contacts), dim=-1
        )

    def _inverse_kinematics(self, positions: Tensor, facing: Tensor) -> Tensor:
        """HumanML3D's bone-wise inverse kinematics: ``(T, J, 4)`` quaternions, root = facing."""
        spec = self.spec
        num_frames, num_joints = positions.shape[:2]
        directions = torch.as_tensor(spec.rest_directions, dtype=positions.dtype, device=positions.device)
        quats = [facing.new_zeros(num_frames, 4) for _ in range(num_joints)]
        quats[0] = facing
        for chain in spec.chains or ():
            accumulated = facing
            for parent, child in zip(chain[:-1], chain[1:], strict=True):
                bone = positions[:, child] - positions[:, parent]
                bone = bone / bone.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                swing = quat_between(directions[child].expand_as(bone), bone)
                local = quat_mul(quat_conj(accumulated), swing)
                quats[child] = local
                accumulated = quat_mul(accumulated, local)
        return torch.stack(quats, dim=1)

    def encode_motion(self, motion: Motion, dtype: torch.dtype = torch.float64) -> Tensor:
        """Features of a :class:`Motion` (FK for positions, its own rotations for ``"local"``)."""
        if not motion.skeleton.same_topology(self.spec.skeleton):
            raise MofusionError(
                f"motion skeleton ({motion.skeleton.describe()}) differs from the representation's "
                f"({self.spec.skeleton.describe()})"
            )
        positions = torch.from_numpy(motion.positions()).to(dtype)
        rotations = torch.from_numpy(motion.rotations).to(dtype)
        return self.encode(positions, rotations)

    # -- decoding -------------------------------------------------------------------------------
    def root_trajectory(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Facing quaternions ``(..., T, 4)`` and root positions ``(..., T, 3)``, integrated from frame 0.

        Frame 0 faces +Z at the origin: the features hold velocities, not absolute placement.
        """
        yaw_velocity = features[..., 0]
        angle = torch.cumsum(F.pad(yaw_velocity[..., :-1], (1, 0)), dim=-1)
        zero = torch.zeros_like(angle)
        facing = torch.stack((torch.cos(angle), zero, torch.sin(angle), zero), dim=-1)
        step = torch.stack(
            (features[..., :-1, 1], torch.zeros_like(features[..., :-1, 1]), features[..., :-1, 2]), -1
        )
        step = quat_rotate(quat_conj(facing[..., 1:, :]), step)
        root_xz = torch.cumsum(F.pad(step, (0, 0, 1, 0)), dim=-2)
        root = torch.stack((root_xz[..., 0], features[..., 3], root_xz[..., 2]), dim=-1)
        return facing, root

    def local_positions(self, features: Tensor) -> Tensor:
        """Joint positions ``(..., T, J, 3)`` in each frame's facing frame, root above the origin.

        Bone lengths and left/right differences need nothing more, so the losses use this cheaper
        decoding, which also avoids integrating velocities.
        """
        sl = self.slices["local_positions"]
        joints = features[..., sl].reshape(features.shape[:-1] + (self.spec.num_joints - 1, 3))
        height = features[..., 3]
        root = torch.stack((torch.zeros_like(height), height, torch.zeros_like(height)), dim=-1)
        return torch.cat((root.unsqueeze(-2), joints), dim=-2)

    def decode_positions(self, features: Tensor, trajectory: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """World joint positions ``(..., T, J, 3)`` from features (HumanML3D's ``recover_from_ric``).

        ``trajectory``: :meth:`root_trajectory` of the same features, where the caller needs it too
        (18 operations fewer, each a kernel of its own on a GPU).
        """
        facing, root = self.root_trajectory(features) if trajectory is None else trajectory
        local = self.local_positions(features)[..., 1:, :]
        inverse = quat_conj(facing).unsqueeze(-2).expand(local.shape[:-1] + (4,))
        world = quat_rotate(inverse, local)
        offset = torch.stack((root[..., 0], torch.zeros_like(root[..., 0]), root[..., 2]), dim=-1)
        world = world + offset.unsqueeze(-2)
        return torch.cat((root.unsqueeze(-2), world), dim=-2)

    def consolidated_positions(
        self,
        features: Tensor,
        velocity_weight: float,
        pinned: Tensor | None = None,
        smoothing: float = 0.0,
    ) -> Tensor:
        """World joint positions that agree with both position and velocity features, ``(..., T, J, 3)``.

        A generated feature vector is redundant but not consistent: its positions carry
        independent per-frame errors (jitter, worst at hands and toes), its velocities smaller
        ones that drift when integrated. The least-squares path ``P`` minimising
        ``sum_t |P_t - A_t|^2 + w sum_t |P_{t+1} - P_t - D_t|^2`` (``A`` the decoded positions, ``D``
        the decoded displacements) keeps the low frequencies of the first and the high frequencies
        of the second. On consistent features (real data) it returns the decoded positions.
        ``pinned`` (``(..., T)`` bool) marks frames held at their decoded positions (known frames);
        ``smoothing`` adds an acceleration penalty (see :func:`least_squares_path`).
        """
        trajectory = self.root_trajectory(features)
        positions = self.decode_positions(features, trajectory)
        frames = positions.shape[-3]
        if frames < 2 or (velocity_weight <= 0 and smoothing <= 0):
            return positions
        facing = trajectory[0]
        j = self.spec.num_joints
        velocities = features[..., self.slices["velocities"]].reshape(features.shape[:-1] + (j, 3))
        inverse = quat_conj(facing).unsqueeze(-2).expand(velocities.shape[:-1] + (4,))
        steps = quat_rotate(inverse, velocities)[..., :-1, :, :].detach().cpu().double().numpy()
        anchors = positions.detach().cpu().double().numpy()
        batch_shape = anchors.shape[:-3]
        pins = None
        if pinned is not None:
            pins = np.broadcast_to(pinned.cpu().numpy(), batch_shape + (frames,)).reshape(-1, frames)
        out = least_squares_path(
            anchors.reshape((-1, frames, j * 3)),
            steps.reshape((-1, frames - 1, j * 3)),
            velocity_weight,
            pins,
            smoothing,
        )
        result = torch.from_numpy(out.reshape(batch_shape + (frames, j, 3)))
        return result.to(dtype=positions.dtype, device=positions.device)

    def decode_rotations(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Local rotation matrices ``(..., T, J, 3, 3)`` and root positions ``(..., T, 3)``.

        Only for the ``"local"`` rotation source, whose 6-D block holds the skeleton's own rotations.
        """
        if self.spec.rotation_source != "local":
            raise MofusionError("rotations decode only for the 'local' rotation source")
        facing, root = self.root_trajectory(features)
        rot = features[..., self.slices["rotations"]]
        rot = rot.reshape(rot.shape[:-1] + (self.spec.num_joints, 6))
        matrices = rot6d_to_matrix(rot)
        world_root = quat_to_matrix(quat_conj(facing)) @ matrices[..., 0, :, :]
        matrices = torch.cat((world_root.unsqueeze(-3), matrices[..., 1:, :, :]), dim=-3)
        return matrices, root

    def decode_motion(self, features: Tensor) -> Motion:
        """A :class:`Motion` (for BVH export) from the features of one clip ``(T, C)``."""
        matrices, root = self.decode_rotations(features.detach().double().cpu())
        quats = matrix_to_quat(matrices)
        return Motion(self.spec.skeleton, quats.numpy(), root.numpy(), self.spec.fps)


def _rotation_reference(spec: FeatureSpec) -> list[int]:
    """Per joint, the joint whose global rotation its ``"humanml3d"`` rotation is relative to (-1:
    the facing rotation, where a chain starts)."""
    reference = [-1] * spec.num_joints
    for chain in spec.chains or ():
        for k in range(1, len(chain)):
            reference[chain[k]] = -1 if k == 1 else chain[k - 1]
    return reference


def feature_mirror(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Index and sign of each feature that mirror a motion left to right: ``features[..., index] *
    sign`` is the features of the motion reflected in the body's sagittal plane (x -> -x in the
    facing frame, left and right joints swapped), without decoding it.

    Exact for this layout because the reflection ``M = diag(-1, 1, 1)`` commutes with everything
    the encoder does: the facing yaw becomes its negative, a rotation ``R`` becomes ``M R M``
    (entries ``R_ij`` times ``s_i s_j`` with ``s = (-1, 1, 1)``), and a shortest-arc rotation
    between mirrored directions is the mirrored shortest arc. Needs a skeleton whose joint names
    pair left with right (:meth:`Skeleton.mirror_map`) and, for ``"local"`` rotations, a rest pose
    that is itself symmetric. Used to double a small data set (dance-with-melody has 34 training
    dances); labels that name a side (a text caption's "left hand") are not mirrored with it.
    """
    skeleton = spec.skeleton
    mirror = skeleton.mirror_map()
    names = skeleton.names
    r_hip, l_hip, r_sh, l_sh = skeleton.indices(spec.face_joints)
    if mirror[r_hip] != l_hip or mirror[r_sh] != l_sh or mirror[0] != 0:
        raise MofusionError(
            f"cannot mirror this skeleton: its joint names do not pair {names[r_hip]} with {names[l_hip]} "
            f"and {names[r_sh]} with {names[l_sh]}"
        )
    left, right = skeleton.indices(spec.left_foot), skeleton.indices(spec.right_foot)
    if [mirror[j] for j in left] != list(right):
        raise MofusionError("cannot mirror this skeleton: its left and right foot joints do not pair up")
    if spec.rotation_source == "humanml3d":  # a joint's rotation is relative to the same joint's mirror
        relative = _rotation_reference(spec)
        for j in range(1, skeleton.num_joints):
            expected = -1 if relative[j] < 0 else mirror[relative[j]]
            if relative[mirror[j]] != expected:
                raise MofusionError(
                    f"cannot mirror these features: the rotation of {names[j]} and of "
                    f"{names[mirror[j]]} are taken relative to different joints (asymmetric chains)"
                )
    else:
        offsets = skeleton.offsets
        scale = max(float(np.abs(offsets).max()), 1e-9)
        if np.abs(offsets[mirror] * [-1.0, 1.0, 1.0] - offsets).max() > 1e-3 * scale:
            raise MofusionError(
                "cannot mirror these features: the skeleton's rest pose is not left/right symmetric"
            )
    slices = spec.slices
    index = np.arange(spec.dim)
    sign = np.ones(spec.dim)
    point = np.array([-1.0, 1.0, 1.0])
    rot6d = np.array([1.0, -1.0, -1.0, -1.0, 1.0, 1.0])  # columns 0 and 1 of M R M

    def per_joint(block: str, first: int, width: int, signs: np.ndarray) -> None:
        start = slices[block].start
        count = (slices[block].stop - start) // width
        for k in range(count):
            source = mirror[k + first] - first
            index[start + k * width : start + (k + 1) * width] = np.arange(width) + start + source * width
            sign[start + k * width : start + (k + 1) * width] = signs

    sign[slices["root_yaw_velocity"]] = -1.0
    sign[slices["root_xz_velocity"].start] = -1.0
    per_joint("local_positions", 1, 3, point)
    per_joint("rotations", 0 if spec.rotation_source == "local" else 1, 6, rot6d)
    per_joint("velocities", 0, 3, point)
    contacts = slices["contacts"].start
    count = len(left)
    index[contacts : contacts + 2 * count] = contacts + np.r_[np.arange(count, 2 * count), np.arange(count)]
    return index, sign


class Normalizer(torch.nn.Module):
    """Per-feature mean and standard deviation, saved with every model.

    Following HumanML3D, the standard deviation is averaged within each block of the layout (all
    local positions share one value, all rotations another, ...), which keeps the relative scale of
    joints inside a block and does not blow up nearly constant channels.
    """

    def __init__(self, mean: Tensor, std: Tensor, bound: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())
        if bound is None:
            bound = torch.full_like(self.mean, float("inf"))
        self.register_buffer("bound", bound.detach().clone().float())

    @classmethod
    def fit(
        cls,
        features: Tensor,
        blocks: dict[str, slice] | None = None,
        min_std: float = 1e-5,
        margin: float = 1.5,
    ) -> Normalizer:
        """Statistics of ``features (N, C)``; ``blocks`` share one standard deviation each.

        ``bound`` is ``margin`` times the largest normalised magnitude of each channel in the data:
        samplers clip their estimate of the clean motion to it, which keeps one bad estimate at a
        very noisy step from throwing the whole trajectory out of range.
        """
        data = features.double()
        mean = data.mean(0)
        std = data.std(0, unbiased=False)
        if blocks:
            for sl in blocks.values():
                if sl.stop > sl.start:
                    std[sl] = std[sl].mean()
        std = std.clamp_min(min_std)
        bound = ((data - mean) / std).abs().amax(0) * margin
        return cls(mean, std, bound.clamp_min(1e-3))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.std.to(x.dtype) + self.mean.to(x.dtype)


__all__ = [
    "BLOCKS",
    "FeatureSpec",
    "MotionRepresentation",
    "Normalizer",
    "feature_mirror",
    "gaussian_smooth",
]
