"""mofusion: synthesis and editing of 3D human motion with denoising diffusion (after MoFusion).

The pieces, from the bottom up: :mod:`~mofusion.rotations` and :mod:`~mofusion.skeleton` (forward
kinematics), :mod:`~mofusion.bvh` and :mod:`~mofusion.motion` (files), :mod:`~mofusion.representation`
(the HumanML3D-style feature vector), :mod:`~mofusion.data`, :mod:`~mofusion.denoiser` (the 1-D U-Net),
:mod:`~mofusion.diffusion` (schedules and samplers), :mod:`~mofusion.losses`, :mod:`~mofusion.training`,
:mod:`~mofusion.pipeline` (generation) and the ``mofusion`` command line (:mod:`~mofusion.cli`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .bvh import BvhData, read_bvh, write_bvh
from .motion import Motion
from .pipeline import MotionPipeline
from .skeleton import Skeleton, forward_kinematics

__all__ = [
    "BvhData",
    "Motion",
    "MotionPipeline",
    "Skeleton",
    "__version__",
    "forward_kinematics",
    "read_bvh",
    "write_bvh",
]
