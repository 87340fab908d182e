"""Writing generated motions: BVH (Blender, MotionBuilder, pybvh), .npy joint positions, .npz.

Every file is written atomically. Several samples to one ``.bvh`` name become ``name_000.bvh``,
``name_001.bvh``, ...; ``.npy``/``.npz`` hold all samples in one array with a JSON sidecar that
records fps, joint names and parents.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_path, atomic_write_json
from .bvh import write_bvh
from .errors import MofusionError
from .motion import Motion
from .skeleton import Skeleton

MOTION_SUFFIXES = (".bvh", ".npy", ".npz")


def numbered(path: Path, index: int, count: int) -> Path:
    if count == 1:
        return path
    width = max(3, len(str(count - 1)))
    return path.with_name(f"{path.stem}_{index:0{width}d}{path.suffix}")


def check_output(path: str | Path, allowed: Sequence[str]) -> Path:
    path = Path(path)
    if path.suffix.lower() not in allowed:
        raise MofusionError(f"{path}: unsupported output format; use one of {', '.join(allowed)}")
    if path.exists() and path.is_dir():
        raise MofusionError(f"{path}: is a directory")
    return path


def save_bvh(
    path: Path, motions: Sequence[Motion], file_scale: float = 1.0, fps: float | None = None
) -> list[Path]:
    """One BVH per motion, in file units (lengths divided by ``file_scale``), optionally resampled."""
    written = []
    for i, motion in enumerate(motions):
        if fps is not None:
            motion = motion.resample(fps)
        target = numbered(path, i, len(motions))
        write_bvh(target, motion.to_bvh(scale=1.0 / file_scale))
        written.append(target)
    return written


def save_positions(
    path: Path, positions: np.ndarray, skeleton: Skeleton, fps: float, meta: dict[str, Any]
) -> list[Path]:
    """Joint positions ``(N, T, J, 3)`` in metres as .npy (or .npz with named arrays), plus a sidecar."""
    positions = np.asarray(positions, dtype=np.float32)
    sidecar = {"fps": fps, "joint_names": list(skeleton.names), "parents": list(skeleton.parents),
               "shape": "(samples, frames, joints, xyz)", "units": "metres, Y up", **meta}  # fmt: skip
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".npz":
            np.savez(tmp, positions=positions, fps=np.float32(fps), parents=np.asarray(skeleton.parents),
                     joint_names=np.asarray(skeleton.names))  # fmt: skip
        else:
            np.save(tmp, positions)
    json_path = path.with_suffix(path.suffix + ".json")
    atomic_write_json(json_path, sidecar)
    return [path, json_path]
