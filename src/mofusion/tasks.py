"""Editing tasks on user files: continuation, in-betweening and body-part regeneration.

An input is a BVH of the model's skeleton or a ``.npy`` of joint positions written by ``mofusion
generate`` (its ``.json`` sidecar gives fps and joint names). The model works at its own frame rate;
results are written at the input's, with every kept input frame copied verbatim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import NUMPY_READ_ERRORS
from .bvh import BvhData, read_bvh
from .editing import EditMethod, EditRequest, parse_joints
from .errors import InputError, MofusionError
from .motion import Motion, fit_length, resample_positions
from .pipeline import MotionPipeline

MIN_INPUT_FRAMES = 2


@dataclass
class Clip:
    """An input at its own frame rate, plus what the model needs at the model's."""

    path: Path
    fps: float
    positions: np.ndarray  # (T, J, 3) metres, input frames
    motion: Motion | None  # on the model's skeleton, input frames (None for positions-only input)
    bvh: BvhData | None

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])


def load_clip(path: str | Path, pipe: MotionPipeline) -> Clip:
    """Read a BVH or .npy input and check that it is on the model's skeleton."""
    path = Path(path)
    skeleton = pipe.spec.skeleton
    suffix = path.suffix.lower()
    if suffix == ".bvh":
        data = read_bvh(path)
        try:
            motion = Motion.from_bvh(data, scale=pipe.file_scale, source=str(path))
        except MofusionError as exc:
            raise InputError(path, str(exc).split(": ")[-1]) from None
        if not motion.skeleton.same_topology(skeleton):
            raise InputError(
                path,
                f"its skeleton ({motion.skeleton.describe()}) is not the model's ({skeleton.describe()})",
            )
        motion = motion.with_skeleton(skeleton)
        clip = Clip(path, motion.fps, motion.positions(), motion, data)
    elif suffix == ".npy":
        sidecar = path.with_suffix(".npy.json")
        try:
            positions = np.load(path, allow_pickle=False)
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(exc.filename, "no such file (a .npy input needs its .json sidecar)") from None
        except NUMPY_READ_ERRORS as exc:
            raise InputError(path, f"cannot read joint positions ({type(exc).__name__}: {exc})") from None
        if positions.ndim == 4 and positions.shape[0] == 1:
            positions = positions[0]
        if positions.ndim != 3 or positions.shape[1:] != (skeleton.num_joints, 3):
            raise InputError(
                path, f"expected joint positions (T, {skeleton.num_joints}, 3), got {positions.shape}"
            )
        if list(meta.get("joint_names", [])) != list(skeleton.names):
            raise InputError(path, "its joints are not the model's skeleton")
        if not np.isfinite(positions).all():
            raise InputError(path, "joint positions contain NaN or inf")
        clip = Clip(path, float(meta["fps"]), positions.astype(np.float64), None, None)
    else:
        raise InputError(path, "expected a .bvh or .npy input")
    if clip.num_frames < MIN_INPUT_FRAMES:
        raise InputError(path, f"has {clip.num_frames} frame(s); at least {MIN_INPUT_FRAMES} are needed")
    return clip


def _to_model_rate(clip: Clip, pipe: MotionPipeline) -> tuple[Motion | None, np.ndarray]:
    """The input resampled to the model's frame rate: motion (if any) and positions."""
    if clip.motion is not None:
        motion = clip.motion.resample(pipe.fps)
        return motion, motion.positions()
    return None, resample_positions(clip.positions, clip.fps, pipe.fps)


def _model_frames_known(known_input: np.ndarray, clip_fps: float, model_fps: float, count: int) -> np.ndarray:
    """A model frame is known when the input frames on both sides of its time are known."""
    times = np.arange(count) * clip_fps / model_fps
    lo = np.clip(np.floor(times + 1e-9).astype(int), 0, len(known_input) - 1)
    hi = np.clip(np.ceil(times - 1e-9).astype(int), 0, len(known_input) - 1)
    return known_input[lo] & known_input[hi]


@dataclass
class TaskResult:
    """The result at the input's frame rate: the motion, its joint positions (the input's on kept
    frames, verbatim, also for positions-only input) and which output frames were kept."""

    motion: Motion
    positions: np.ndarray
    fps: float
    kept: np.ndarray


def run_edit(
    pipe: MotionPipeline,
    clip: Clip,
    keep_frames: np.ndarray,
    extra_seconds: float = 0.0,
    regenerate: str | None = None,
    keep_trajectory: bool = False,
    context_seconds: float | None = None,
    seed: int = 0,
    method: EditMethod | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    progress: bool = False,
    text: str | None = None,
) -> TaskResult:
    """Keep ``keep_frames`` of the input (input frame indices), regenerate the rest (and the body
    part ``regenerate`` everywhere), and append ``extra_seconds`` of new motion."""
    extra_input_frames = int(round(extra_seconds * clip.fps))
    total_input_frames = clip.num_frames + extra_input_frames
    motion, positions = _to_model_rate(clip, pipe)
    motion_full, positions_full = motion, positions
    first = 0
    if context_seconds is not None and extra_seconds > 0:
        first = max(0, len(positions) - max(MIN_INPUT_FRAMES, int(round(context_seconds * pipe.fps))))
    model_known = _model_frames_known(keep_frames, clip.fps, pipe.fps, len(positions))[first:]
    positions = positions[first:]
    if motion is not None:
        motion = motion.slice(first, motion.num_frames)
    num_frames = len(positions) + int(round(extra_seconds * pipe.fps))
    frames = np.zeros(num_frames, dtype=bool)
    frames[: len(model_known)] = model_known
    joints = None
    if regenerate is not None:
        joints = np.ones(pipe.spec.num_joints, dtype=bool)
        joints[parse_joints(pipe.spec, regenerate)] = False
    request = EditRequest(
        num_frames, frames, motion=motion, positions=positions, joints=joints, trajectory=keep_trajectory
    )
    result = pipe.edit(
        [request], seed=seed, method=method, sampler=sampler, steps=steps, progress=progress, text=text
    )[0]
    # back to the input's frame rate; frames before the context window come from the input itself
    out = result.motion
    if first > 0:
        model_rate = motion_full if motion_full is not None else None
        head_rot = (
            model_rate.rotations[:first] if model_rate is not None else np.repeat(out.rotations[:1], first, 0)
        )
        head_root = model_rate.root_positions[:first] if model_rate is not None else positions_full[:first, 0]
        out = Motion(
            out.skeleton,
            np.concatenate([head_rot, out.rotations]),
            np.concatenate([head_root, out.root_positions]),
            pipe.fps,
        )
    kept = np.zeros(total_input_frames, dtype=bool)
    kept[: clip.num_frames] = keep_frames
    resampled = out.resample(clip.fps)
    rotations = fit_length(resampled.rotations, total_input_frames)
    root = fit_length(resampled.root_positions, total_input_frames)
    if clip.motion is None:  # positions only: kept frames keep their positions, rotations are the model's
        final = Motion(out.skeleton, rotations, root, clip.fps)
        positions_out = final.positions()
        positions_out[kept] = clip.positions[np.flatnonzero(kept)]
        return TaskResult(final, positions_out, clip.fps, kept)
    rotations[kept] = clip.motion.rotations[np.flatnonzero(kept)]
    root[kept] = clip.motion.root_positions[np.flatnonzero(kept)]
    if joints is not None:
        rotations[: clip.num_frames, joints] = clip.motion.rotations[:, joints]
        if joints[0]:
            root[: clip.num_frames] = clip.motion.root_positions
    if keep_trajectory:
        root[: clip.num_frames] = clip.motion.root_positions
    final = Motion(out.skeleton, rotations, root, clip.fps)
    return TaskResult(final, final.positions(), clip.fps, kept)
