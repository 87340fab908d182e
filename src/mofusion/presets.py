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

FACE_JOINTS = ("right_hip", "left_hip", "right_shoulder", "left_shoulder")
"""The facing joints (right hip, left hip, right shoulder, left shoulder) of the skeletons whose joint
names spell the sides out: SMPL's (HumanML3D, AIST++) and the dance-with-melody keypoints'."""
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
        face_joints=FACE_JOINTS,
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


# -- dance-with-melody (23 keypoints, positions only) ------------------------------------------------

# The model's skeleton: the 23 keypoints plus two of the drawing script's virtual joints (neck =
# mid(3, 12), head = mid(0, 1)), reordered so the pelvis is the root and parents come first.
# Sides: keypoints 3-11 are the dancer's left (the toes 10/19 lie ahead of the ankles along
# cross(up, hip 16 - hip 7) in 87-99 % of frames of every dance checked, so that is forward and 16 is
# the right hip); 0 and 1 are the left and right sides of the head (in the dancer's facing frame 0
# lies 5-6 cm to the left of the head's centre, 1 as far to the right); 11/20 are the heels.
DWM_MODEL_KEYPOINTS = (
    2,
    7,
    8,
    9,
    10,
    11,
    16,
    17,
    18,
    19,
    20,
    -1,
    -2,
    0,
    1,
    3,
    4,
    5,
    6,
    22,
    12,
    13,
    14,
    15,
    21,
)
"""Keypoint index of each model joint; -1 is the neck (mid of 3 and 12), -2 the head (mid of 0 and 1)."""
DWM_NAMES = (
    "pelvis", "left_hip", "left_knee", "left_ankle", "left_toe", "left_heel",
    "right_hip", "right_knee", "right_ankle", "right_toe", "right_heel",
    "neck", "head", "left_head", "right_head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand", "left_hand_tip",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand", "right_hand_tip",
)  # fmt: skip
DWM_MODEL_PARENTS = (-1, 0, 1, 2, 3, 3, 0, 6, 7, 8, 8, 0, 11, 12, 12, 11, 15, 16, 17, 17, 11, 20, 21, 22, 22)
# Rest directions (+X left, +Y up, +Z forward; a T-pose): the BVH rest pose and the bone frames of
# the HumanML3D-style inverse kinematics that gives the rotation features.
_L, _R, _UP, _DOWN, _FWD, _BACK = (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)
DWM_REST_DIRECTIONS = np.array(
    [(0, 0, 0), _L, _DOWN, _DOWN, _FWD, (0, -0.6, -0.8), _R, _DOWN, _DOWN, _FWD, (0, -0.6, -0.8),
     _UP, _UP, _L, _R, _L, _L, _L, _L, _L, _R, _R, _R, _R, _R],
    dtype=np.float64,
)  # fmt: skip
# Mirror-symmetric: the two head-side points both start from the head, so that a left/right
# mirrored dance has the features of the mirror image (see representation.feature_mirror).
DWM_CHAINS = (
    (0, 1, 2, 3, 4), (3, 5), (0, 6, 7, 8, 9), (8, 10), (0, 11, 12), (12, 13), (12, 14),
    (11, 15, 16, 17, 18), (17, 19), (11, 20, 21, 22, 23), (22, 24),
)  # fmt: skip
DWM_FPS = 25.0
DWM_UPPER_BODY = DWM_NAMES[11:]


def dwm_model_positions(keypoints: np.ndarray) -> np.ndarray:
    """``(T, 23, 3)`` keypoints -> ``(T, 25, 3)`` positions of the model's joints."""
    neck = (keypoints[:, 3] + keypoints[:, 12]) / 2
    head = (keypoints[:, 0] + keypoints[:, 1]) / 2
    extra = {-1: neck, -2: head}
    return np.stack([extra[k] if k < 0 else keypoints[:, k] for k in DWM_MODEL_KEYPOINTS], axis=1)


def dwm_skeleton(bone_lengths: np.ndarray) -> Skeleton:
    """The model's skeleton in a T-pose with the given ``(25,)`` bone lengths (root entry ignored)."""
    lengths = np.asarray(bone_lengths, dtype=np.float64).copy()
    lengths[0] = 0.0
    directions = DWM_REST_DIRECTIONS / np.maximum(
        np.linalg.norm(DWM_REST_DIRECTIONS, axis=1, keepdims=True), 1e-12
    )
    return Skeleton(DWM_NAMES, DWM_MODEL_PARENTS, directions * lengths[:, None])


def dwm_spec(
    skeleton: Skeleton, fps: float = DWM_FPS, contact_speed: float = HUMANML3D_CONTACT_SPEED
) -> FeatureSpec:
    """Features of dance-with-melody dances: rotations solved from the positions (HumanML3D's way)."""
    return FeatureSpec(
        skeleton=skeleton,
        fps=fps,
        face_joints=FACE_JOINTS,
        left_foot=("left_heel", "left_toe"),
        right_foot=("right_heel", "right_toe"),
        contact_speed=contact_speed,
        facing_smoothing=0.5,
        rotation_source="humanml3d",
        rest_directions=DWM_REST_DIRECTIONS,
        chains=DWM_CHAINS,
    )
