"""Skeleton and feature-spec presets for the data sets mofusion knows.

Every number a data set imposes (joint names, which joints face forward, which are feet, thresholds)
lives here, not in the code that uses it.
"""

from __future__ import annotations

import math

import numpy as np

from .representation import FeatureSpec
from .skeleton import Skeleton

# -- HumanML3D / SMPL 22 -------------------------------------------------------------------------

SMPL22_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)  # fmt: skip
SMPL22_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
# HumanML3D's kinematic chains (paramUtil.t2m_kinematic_chain): each restarts at the facing rotation.
SMPL22_CHAINS = (
    (0, 2, 5, 8, 11),
    (0, 1, 4, 7, 10),
    (0, 3, 6, 9, 12, 15),
    (9, 14, 17, 19, 21),
    (9, 13, 16, 18, 20),
)
# Rest bone directions of HumanML3D's inverse kinematics (paramUtil.t2m_raw_offsets); +X is left.
SMPL22_REST_DIRECTIONS = np.array(
    [
        [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, -1, 0],
        [0, -1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1],
        [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0],
    ],
    dtype=np.float64,
)  # fmt: skip
# Bone lengths (m) of HumanML3D's uniform target skeleton, measured on new_joints/012314.npy (every
# clip of the data set is retargeted to these lengths, so any clip gives the same values).
SMPL22_BONE_LENGTHS = (
    0.103074, 0.109883, 0.131568, 0.393623, 0.390188, 0.14319, 0.432433, 0.425643, 0.057365, 0.143382,
    0.149419, 0.21936, 0.137487, 0.143383, 0.103039, 0.131614, 0.122984, 0.25684, 0.263092, 0.266012,
    0.269876,
)  # fmt: skip
HUMANML3D_FPS = 20.0
# HumanML3D marks a foot joint in contact when its squared displacement per frame is below 0.002 m^2.
HUMANML3D_CONTACT_SPEED = math.sqrt(0.002) * HUMANML3D_FPS


def smpl22_skeleton() -> Skeleton:
    lengths = np.concatenate([[0.0], SMPL22_BONE_LENGTHS])
    return Skeleton(SMPL22_NAMES, SMPL22_PARENTS, SMPL22_REST_DIRECTIONS * lengths[:, None])


def smpl22_humanml3d_spec() -> FeatureSpec:
    """HumanML3D's 263-wide feature vector on its 22-joint skeleton, bit-compatible with the data set."""
    return FeatureSpec(
        skeleton=smpl22_skeleton(),
        fps=HUMANML3D_FPS,
        face_joints=("right_hip", "left_hip", "right_shoulder", "left_shoulder"),
        left_foot=("left_ankle", "left_foot"),
        right_foot=("right_ankle", "right_foot"),
        contact_speed=HUMANML3D_CONTACT_SPEED,
        facing_smoothing=1.0,
        rotation_source="humanml3d",
        humanml3d_quirks=True,
        rest_directions=SMPL22_REST_DIRECTIONS,
        chains=SMPL22_CHAINS,
    )


# -- Bandai-Namco ---------------------------------------------------------------------------------

BANDAI_FACE_JOINTS = ("UpperLeg_R", "UpperLeg_L", "UpperArm_R", "UpperArm_L")
BANDAI_LEFT_FOOT = ("Foot_L", "Toes_L")
BANDAI_RIGHT_FOOT = ("Foot_R", "Toes_R")
BANDAI_FILE_SCALE = 0.01  # the files are in centimetres; mofusion works in metres
BANDAI_UPPER_BODY = ("Spine", "Chest", "Neck", "Head", "Shoulder_L", "UpperArm_L", "LowerArm_L", "Hand_L",
                     "Shoulder_R", "UpperArm_R", "LowerArm_R", "Hand_R")  # fmt: skip


def bandai_spec(skeleton: Skeleton, fps: float) -> FeatureSpec:
    """Features of Bandai-Namco motions (``Hips`` as the root, metres), from the files' own rotations."""
    return FeatureSpec(
        skeleton=skeleton,
        fps=fps,
        face_joints=BANDAI_FACE_JOINTS,
        left_foot=BANDAI_LEFT_FOOT,
        right_foot=BANDAI_RIGHT_FOOT,
        contact_speed=HUMANML3D_CONTACT_SPEED,
        facing_smoothing=0.5,
        rotation_source="local",
    )
