"""The :class:`Motion` type: a skeleton animated by local joint rotations and a root trajectory.

This is the exchange format between files (BVH), the feature representation and the renderer. It is
plain numpy; tensors appear only inside the representation and the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp

from .bvh import POSITION_CHANNELS, ROTATION_CHANNELS, BvhData, euler_from_matrices
from .errors import InputError, MofusionError
from .rotations import quat_to_matrix
from .skeleton import Skeleton, forward_kinematics


@dataclass(frozen=True, eq=False)
class Motion:
    """A skeleton animation.

    Args:
        skeleton: joints and rest offsets; non-root joints translate by their fixed offsets.
        rotations: ``(T, J, 4)`` local joint rotations as unit quaternions (w, x, y, z).
        root_positions: ``(T, 3)`` world position of the root joint.
        fps: frames per second.
    """

    skeleton: Skeleton
    rotations: np.ndarray
    root_positions: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        rot = np.asarray(self.rotations, dtype=np.float64)
        root = np.asarray(self.root_positions, dtype=np.float64)
        if rot.ndim != 3 or rot.shape[1:] != (self.skeleton.num_joints, 4):
            raise ValueError(f"rotations must be (T, {self.skeleton.num_joints}, 4), got {rot.shape}")
        if root.shape != (rot.shape[0], 3):
            raise ValueError(f"root_positions must be ({rot.shape[0]}, 3), got {root.shape}")
        if self.fps <= 0:
            raise ValueError("fps must be positive")
        object.__setattr__(self, "rotations", rot)
        object.__setattr__(self, "root_positions", root)

    @property
    def num_frames(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (self.num_frames - 1) / self.fps

    def positions(self) -> np.ndarray:
        """World joint positions ``(T, J, 3)``."""
        rot = quat_to_matrix(torch.from_numpy(self.rotations))
        pos, _ = forward_kinematics(self.skeleton, rot, torch.from_numpy(self.root_positions))
        return pos.numpy()

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_bvh(
        cls,
        data: BvhData,
        scale: float = 1.0,
        collapse_root: bool | None = None,
        source: str | None = None,
    ) -> Motion:
        """Motion of a BVH file, lengths multiplied by ``scale`` (e.g. 0.01 for cm -> m).

        Args:
            data: the file's content.
            scale: length factor.
            collapse_root: fold the root joint into its only child, which becomes the root. The
                default (None) does so when that child has position channels, i.e. when the child
                carries the trajectory, as ``Hips`` under Bandai-Namco's ``joint_Root`` does.
            source: the file name, for error messages.

        Position channels on other non-root joints are accepted when they are constant over time
        (as in the Bandai-Namco files); their value becomes the joint's offset. Animated
        translations of such joints cannot be expressed by a :class:`Motion` and raise
        :class:`InputError`.
        """
        rotations, translations = data.local_transforms()
        skeleton = data.skeleton
        if collapse_root is None:
            collapse_root = (
                skeleton.num_joints > 1
                and skeleton.children(0) == [1]
                and any(c in POSITION_CHANNELS for c in data.channels[1])
            )
        if collapse_root:
            if skeleton.children(0) != [1]:
                raise InputError(source, "the root has more than one child; it cannot be folded into one")
            root_rot = rotations[:, 0]
            child_rot = root_rot @ rotations[:, 1]
            child_pos = translations[:, 0] + (root_rot @ translations[:, 1, :, None])[..., 0]
            rotations = np.concatenate([child_rot[:, None], rotations[:, 2:]], axis=1)
            translations = np.concatenate([child_pos[:, None], translations[:, 2:]], axis=1)
            skeleton = skeleton.without_root()
        offsets = translations[0].copy()
        if skeleton.num_joints > 1:
            drift = np.abs(translations[:, 1:] - offsets[None, 1:]).max()
            if drift > 1e-4 * max(1.0, float(np.abs(offsets[1:]).max())):
                raise InputError(source, "a non-root joint has animated translation channels; not supported")
        offsets[0] = 0.0
        skeleton = skeleton.with_offsets(offsets).scaled(scale)
        quats = Rotation.from_matrix(rotations.reshape(-1, 3, 3)).as_quat()  # x, y, z, w
        quats = np.roll(quats, 1, axis=-1).reshape(rotations.shape[:2] + (4,))
        return cls(skeleton, quats, translations[:, 0] * scale, data.fps)

    def to_bvh(self, rotation_order: str = "ZXY", scale: float = 1.0) -> BvhData:
        """A standard BVH layout: 6 channels on the root, 3 rotation channels on every other joint.

        This is the layout that Blender, MotionBuilder and most libraries read. Lengths are
        multiplied by ``scale`` (e.g. 100 to write metres as centimetres).
        """
        order = rotation_order.upper()
        rot_names = tuple(f"{axis}rotation" for axis in order)
        if sorted(rot_names) != sorted(ROTATION_CHANNELS):
            raise MofusionError(f"invalid rotation order {rotation_order!r}")
        num_joints = self.skeleton.num_joints
        matrices = quat_to_matrix(torch.from_numpy(self.rotations)).numpy()
        angles = euler_from_matrices(matrices, order)  # (T, J, 3)
        columns = [self.root_positions * scale, angles[:, 0]]
        columns.extend(angles[:, j] for j in range(1, num_joints))
        values = np.concatenate(columns, axis=1)
        channels = (POSITION_CHANNELS + rot_names,) + (rot_names,) * (num_joints - 1)
        skeleton = self.skeleton.scaled(scale)
        skeleton = skeleton.with_offsets(np.concatenate([np.zeros((1, 3)), skeleton.offsets[1:]]))
        return BvhData(skeleton, channels, 1.0 / self.fps, values)

    def to_bvh_like(self, template: BvhData, scale: float = 1.0, keep: np.ndarray | None = None) -> BvhData:
        """This motion in ``template``'s channel layout (frames at this motion's rate, which must be
        the template's), lengths divided by ``scale`` (file units per metre: 1 / file scale).

        Frames flagged in ``keep`` (indices of template frames) copy the template's values verbatim,
        so an edited file keeps its known frames to the last printed digit. If the template's root
        was folded into its child when it was read, the root's channels are carried over (held at
        the template's last frame beyond its end) and the child's are solved under it. Euler angles
        of the other frames are unwrapped towards their predecessors, so curves have no 360-degree
        jumps at the seams.
        """
        t_sk = template.skeleton
        folded = t_sk.names[1:] == self.skeleton.names
        if not folded and t_sk.names != self.skeleton.names:
            raise MofusionError("the motion's skeleton differs from the template BVH's")
        if abs(template.fps - self.fps) > 1e-6:
            raise MofusionError("resample the motion to the template's frame rate first")
        frames = self.num_frames
        hold = np.minimum(np.arange(frames), template.num_frames - 1)
        t_rot, t_trans = template.local_transforms()
        t_rot, t_trans = t_rot[hold], t_trans[hold]
        rotations = quat_to_matrix(torch.from_numpy(self.rotations)).numpy()
        root = self.root_positions / scale
        if folded:
            parent_rot, parent_pos = t_rot[:, 0], t_trans[:, 0]
            inverse = np.swapaxes(parent_rot, -1, -2)
            child_rot = inverse @ rotations[:, 0]
            child_pos = (inverse @ (root - parent_pos)[..., None])[..., 0]
            local_rot = np.concatenate([parent_rot[:, None], child_rot[:, None], rotations[:, 1:]], axis=1)
            root_trans = [parent_pos, child_pos]
        else:
            local_rot = rotations
            root_trans = [root]
        values = np.zeros((frames, template.values.shape[1]))
        for j, (chans, sl) in enumerate(zip(template.channels, template.channel_slices(), strict=True)):
            block = np.zeros((frames, len(chans)))
            order = template.rotation_order(j)
            angles = euler_from_matrices(local_rot[:, j], order) if order else None
            translation = root_trans[j] if j < len(root_trans) else t_trans[:, j]
            rot_i = 0
            for i, c in enumerate(chans):
                if c in ROTATION_CHANNELS:
                    block[:, i] = angles[:, rot_i]  # type: ignore[index]
                    rot_i += 1
                else:
                    block[:, i] = translation[:, POSITION_CHANNELS.index(c)]
            values[:, sl] = block
        keep_mask = np.zeros(frames, dtype=bool)
        if keep is not None:
            keep_mask[np.asarray(keep, dtype=int)] = True
            values[keep_mask] = template.values[np.flatnonzero(keep_mask)]
        rotation_columns = np.array(
            [c in ROTATION_CHANNELS for chans in template.channels for c in chans], dtype=bool
        )
        for f in range(1, frames):
            if not keep_mask[f]:
                prev = values[f - 1, rotation_columns]
                cur = values[f, rotation_columns]
                values[f, rotation_columns] = cur - 360.0 * np.round((cur - prev) / 360.0)
        return BvhData(t_sk, template.channels, template.frame_time, values)

    # -- operations -----------------------------------------------------------------------------
    def resample(self, fps: float) -> Motion:
        """Resample to ``fps``: slerp for rotations, linear for the root, same start time."""
        if abs(fps - self.fps) < 1e-9:
            return self
        if self.num_frames < 2:
            return Motion(self.skeleton, self.rotations, self.root_positions, fps)
        times = np.arange(self.num_frames) / self.fps
        new_times = np.arange(int(np.floor(self.duration * fps + 1e-9)) + 1) / fps
        new_times = np.clip(new_times, 0.0, times[-1])
        rotations = np.empty((len(new_times), self.skeleton.num_joints, 4))
        for j in range(self.skeleton.num_joints):
            keys = Rotation.from_quat(np.roll(self.rotations[:, j], -1, axis=-1))
            rotations[:, j] = np.roll(Slerp(times, keys)(new_times).as_quat(), 1, axis=-1)
        root = np.stack([np.interp(new_times, times, self.root_positions[:, k]) for k in range(3)], axis=1)
        return Motion(self.skeleton, rotations, root, fps)

    def slice(self, start: int, stop: int) -> Motion:
        return Motion(self.skeleton, self.rotations[start:stop], self.root_positions[start:stop], self.fps)

    def with_skeleton(self, skeleton: Skeleton) -> Motion:
        """The same rotations on another skeleton of the same topology (retargeting by offsets).

        The root trajectory is scaled by the ratio of total bone lengths, so that strides keep their
        proportion to the body (HumanML3D's uniform-skeleton step scales by leg length likewise).
        """
        if not skeleton.same_topology(self.skeleton):
            raise MofusionError("cannot retarget between skeletons of different topology")
        ratio = float(skeleton.bone_lengths().sum() / max(self.skeleton.bone_lengths().sum(), 1e-12))
        return Motion(skeleton, self.rotations, self.root_positions * ratio, self.fps)


def fit_length(values: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` rows of ``values``, the last row repeated when there are fewer: a per-frame
    sequence brought to a given length by holding its end."""
    if len(values) >= count:
        return values[:count].copy()
    return np.concatenate([values, np.repeat(values[-1:], count - len(values), axis=0)])


def resample_positions(positions: np.ndarray, fps: float, new_fps: float) -> np.ndarray:
    """Joint positions ``(T, ..., 3)`` linearly resampled to ``new_fps``, same start time, up to the
    last whole frame of the new rate within the clip."""
    if abs(new_fps - fps) < 1e-9:
        return positions
    times = np.arange(len(positions)) / fps
    new_times = np.arange(int(np.floor(times[-1] * new_fps + 1e-9)) + 1) / new_fps
    flat = positions.reshape(len(positions), -1)
    out = np.stack([np.interp(new_times, times, flat[:, k]) for k in range(flat.shape[1])], axis=1)
    return out.reshape(len(new_times), *positions.shape[1:])
