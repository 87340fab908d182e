"""Metric tables that put generated motions beside real ones, measured in the same run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from .config import DataConfig
from .data.dataset import ClipCollection, MotionDataset, load_dataset
from .errors import MofusionError
from .metrics.kinematic import (
    bone_length_std,
    foot_skating_ratio,
    left_right_asymmetry,
    mean_ci,
    planted_toe_height,
)
from .motion import Motion
from .pipeline import MotionPipeline
from .representation import FeatureSpec, MotionRepresentation, Normalizer


def real_windows(
    collection: ClipCollection, frames: int, limit: int | None = None, seed: int = 0
) -> np.ndarray:
    """Feature windows ``(K, frames, C)``: the first ``frames`` of every clip that is long enough."""
    long_enough = [i for i in range(collection.num_clips) if collection.lengths[i] >= frames]
    if limit is not None and len(long_enough) > limit:
        rng = np.random.default_rng(seed)
        long_enough = sorted(rng.choice(long_enough, size=limit, replace=False).tolist())
    if not long_enough:
        raise MofusionError(f"no clip of the split is {frames} frames long; ask for fewer --seconds")
    return np.stack([collection.clip(i)[:frames] for i in long_enough])


def _metrics(
    name: str,
    features: torch.Tensor,
    rep: MotionRepresentation,
    ground: float,
    pipe: MotionPipeline | None = None,
) -> dict[str, Any]:
    """Per-sample metrics of features; ``skating_ratio_bvh`` uses the BVH export path (``pipe``'s,
    with its IK fit) or, for real data, the decoded rotations as they are."""
    spec = rep.spec
    skeleton = spec.skeleton
    decode = pipe.positions if pipe is not None else rep.decode_positions  # what a user gets
    positions = decode(features.double()).numpy()
    motions = pipe.to_motions(features) if pipe is not None else [rep.decode_motion(f) for f in features]
    fk = np.stack([m.positions() for m in motions])
    toes = _toe_joints(spec)
    bone_abs, bone_rel = bone_length_std(positions, skeleton)
    asym_abs, asym_rel = left_right_asymmetry(positions, skeleton)
    skate = foot_skating_ratio(positions, toes, spec.fps, ground=ground)
    skate_fk = foot_skating_ratio(fk, toes, spec.fps, ground=ground)
    row: dict[str, Any] = {"name": name, "samples": int(features.shape[0])}
    for key, values in (
        ("bone_std_cm", bone_abs * 100),
        ("bone_std_pct", bone_rel * 100),
        ("asymmetry_cm", asym_abs * 100),
        ("asymmetry_pct", asym_rel * 100),
        ("skating_ratio", skate),
        ("skating_ratio_bvh", skate_fk),
    ):
        mean, ci = mean_ci(values)
        row[key] = mean
        row[key + "_ci95"] = ci
    return row


def _toe_joints(spec: FeatureSpec) -> list[int]:
    """The last joint of each foot chain (the toes), where foot skating is measured."""
    return [spec.skeleton.index(spec.left_foot[-1]), spec.skeleton.index(spec.right_foot[-1])]


def _comparable_models(
    checkpoints: Sequence[Path], data: str | None, device: str, cache: Path | None
) -> tuple[list[MotionPipeline], MotionDataset, MotionRepresentation]:
    """The checkpoints (which must share one feature layout) and the data set of the first one (or
    ``data``), normalised as that model expects."""
    if not checkpoints:
        raise MofusionError("give at least one --checkpoint")
    pipes = [MotionPipeline.from_checkpoint(c, device) for c in checkpoints]
    reference = pipes[0]
    for c, pipe in zip(checkpoints, pipes, strict=True):
        if not pipe.spec.same_as(reference.spec):
            raise MofusionError(
                f"{c}: its feature layout differs from {checkpoints[0]}'s; compare like with like"
            )
    cfg = DataConfig(**{**reference.config.data.__dict__, "path": data or reference.config.data.path})
    norm = reference.normalizer
    dataset = load_dataset(
        cfg, cache, normalizer=Normalizer(norm.mean.cpu(), norm.std.cpu(), norm.bound.cpu())
    )
    return pipes, dataset, MotionRepresentation(reference.spec)


def kinematics_table(
    checkpoints: Sequence[Path],
    data: str | None,
    num_samples: int,
    seconds: float,
    seed: int,
    sampler: str | None,
    steps: int | None,
    device: str,
    cache: Path | None,
    labels: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows: real test windows, real training windows, then each checkpoint's samples.

    Positions are what the library gives a user: for real windows the features' joint-position block
    (what the kinematic losses act on), for models that block consolidated with the velocity
    features (:meth:`MotionPipeline.positions`); ``skating_ratio_bvh`` is measured on what
    ``mofusion generate`` writes to a BVH file.
    """
    pipes, dataset, rep = _comparable_models(checkpoints, data, device, cache)
    frames = pipes[0].frames_for(seconds)
    test = torch.from_numpy(real_windows(dataset.subset("test"), frames))
    train = torch.from_numpy(
        real_windows(dataset.subset("train"), frames, limit=max(num_samples, 200), seed=seed)
    )
    toes = _toe_joints(rep.spec)
    ground = planted_toe_height(rep.decode_positions(test.double()).numpy(), toes)
    rows = [_metrics("real test", test, rep, ground), _metrics("real train", train, rep, ground)]
    for i, (c, pipe) in enumerate(zip(checkpoints, pipes, strict=True)):
        generated = pipe.generate(num_samples, frames, seed=seed, sampler=sampler, steps=steps)
        row = _metrics(labels[i] if labels else str(c), generated.features, rep, ground, pipe)
        row["checkpoint"] = str(c)
        used = pipe.config.sample
        row["sampler"] = f"{sampler or used.sampler} {used.steps if steps is None else steps}"
        rows.append(row)
    for row in rows:
        row["ground_m"] = ground
        row["frames"] = frames
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    columns = [
        ("bone_std_cm", "bone std cm"),
        ("bone_std_pct", "bone std %"),
        ("asymmetry_cm", "L/R diff cm"),
        ("asymmetry_pct", "L/R diff %"),
        ("skating_ratio", "skating"),
        ("skating_ratio_bvh", "skating (BVH)"),
    ]
    name_width = max(len(r["name"]) for r in rows) + 2
    header = f"{'rows':<{name_width}}{'n':>5}" + "".join(f"{label:>20}" for _, label in columns)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"{row[k]:>11.3f} ± {row[k + '_ci95']:<6.3f}" for k, _ in columns)
        lines.append(f"{row['name']:<{name_width}}{row['samples']:>5}{cells}")
    return "\n".join(lines)


# -- the in-betweening benchmark (LAFAN1 protocol on a held-out split) --------------------------------

TRANSITIONS = (5, 15, 30, 45)
N_PAST = 10
INBETWEEN_GROUND = 0.0425
"""Planted toe-joint height (m) used for foot skating in the in-betweening benchmark: Bandai-Namco's
toe joint sits about 4 cm above the floor (see :func:`planted_toe_height`)."""


def _canonical_window(motion: Motion, rep: MotionRepresentation, n_past: int) -> Motion:
    """LAFAN1's framing of a window: root path centred on its mean ground position, and turned so
    the body faces +Z at the last context frame (LAFAN1 turns to +X; only the axis differs)."""
    positions = motion.positions()
    yaw = _facing_yaw_of(rep, positions)[n_past - 1]
    turn = Rotation.from_euler("y", -yaw)
    center = motion.root_positions.mean(axis=0) * np.array([1.0, 0.0, 1.0])
    root = turn.apply(motion.root_positions - center)
    rotations = motion.rotations.copy()
    root_rot = Rotation.from_quat(np.roll(rotations[:, 0], -1, axis=-1))
    rotations[:, 0] = np.roll((turn * root_rot).as_quat(), 1, axis=-1)
    return Motion(motion.skeleton, rotations, root, motion.fps)


def _facing_yaw_of(rep: MotionRepresentation, positions: np.ndarray) -> np.ndarray:
    from .editing import _facing_yaw

    return _facing_yaw(rep, positions)


def motion_windows(
    collection: ClipCollection, rep: MotionRepresentation, length: int, offset: int
) -> list[Motion]:
    """Sliding windows (LAFAN1: 65 frames every 40 for testing, 50 every 20 for statistics)."""
    windows = []
    for i in range(collection.num_clips):
        features = torch.from_numpy(collection.clip(i)).double()
        if len(features) < length:
            continue
        motion = rep.decode_motion(features)
        for start in range(0, len(features) - length + 1, offset):
            windows.append(_canonical_window(motion.slice(start, start + length), rep, N_PAST))
    return windows


def benchmark_windows(
    dataset: MotionDataset,
    rep: MotionRepresentation,
    split: str,
    max_windows: int | None,
    seed: int,
    length: int = 65,
    offset: int = 40,
) -> list[Motion]:
    """The in-betweening benchmark's windows of a split (65 frames every 40, facing +Z), an evenly
    drawn subset of ``max_windows`` when there are more (the same ones for every ``seed``)."""
    windows = motion_windows(dataset.subset(split), rep, length, offset)
    if max_windows is not None and len(windows) > max_windows:
        picks = np.random.default_rng(seed).choice(len(windows), size=max_windows, replace=False)
        windows = [windows[i] for i in sorted(picks)]
    return windows


Baseline = Callable[[np.ndarray, np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]
"""A LAFAN1 baseline: ``(local quaternions, root positions, last known frame, target) -> transition``."""


def benchmark_known(window: int) -> np.ndarray:
    """Known frames of a benchmark window: the context frames and the target, its last frame."""
    known = np.zeros(window, dtype=bool)
    known[:N_PAST] = True
    known[-1] = True
    return known


def baseline_motions(clips: Sequence[Motion], baseline: Baseline) -> list[Motion]:
    """``clips`` with their transition (between the context and the last frame) filled by a
    LAFAN1 baseline (:func:`~mofusion.metrics.inbetween.interpolation_baseline` or
    :func:`~mofusion.metrics.inbetween.zero_velocity_baseline`)."""
    target = clips[0].num_frames - 1
    local = np.stack([m.rotations for m in clips])
    roots = np.stack([m.root_positions for m in clips])
    local[:, N_PAST:target], roots[:, N_PAST:target] = baseline(local, roots, N_PAST - 1, target)
    return [Motion(m.skeleton, q, r, m.fps) for m, q, r in zip(clips, local, roots, strict=True)]


def position_normalisation(
    dataset: MotionDataset, rep: MotionRepresentation
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of global joint positions over training windows (50 frames every 20): L2P's scale."""
    stats = global_transforms(motion_windows(dataset.subset("train"), rep, 50, 20))[1]
    return stats.mean(axis=(0, 1)), stats.std(axis=(0, 1))


def global_transforms(motions: Sequence[Motion]) -> tuple[np.ndarray, np.ndarray]:
    """Global quaternions ``(B, T, J, 4)`` and positions ``(B, T, J, 3)`` of same-length motions."""
    from .rotations import matrix_to_quat, quat_to_matrix
    from .skeleton import forward_kinematics

    skeleton = motions[0].skeleton
    rot = quat_to_matrix(torch.from_numpy(np.stack([m.rotations for m in motions])))
    root = torch.from_numpy(np.stack([m.root_positions for m in motions]))
    positions, global_rot = forward_kinematics(skeleton, rot, root)
    return matrix_to_quat(global_rot).numpy(), positions.numpy()


def _velocity_jumps(positions: np.ndarray, n_past: int, n_trans: int) -> np.ndarray:
    """Mean over joints of the change of velocity entering and leaving the transition, ``(B, 2)``."""
    v = np.diff(positions, axis=1)  # v[i] = p[i+1] - p[i]
    entry = np.linalg.norm(v[:, n_past - 1] - v[:, n_past - 2], axis=-1).mean(-1)
    exit_ = np.linalg.norm(v[:, n_past + n_trans - 1] - v[:, n_past + n_trans - 2], axis=-1).mean(-1)
    return np.stack([entry, exit_], axis=1)


def _seams_and_skating(
    positions: np.ndarray, n_trans: int, change: float, toes: list[int], fps: float
) -> dict[str, float]:
    """The velocity jump at the transition's ends over ``change`` (the real windows' mean
    frame-to-frame change of velocity) and the foot-skating ratio, for one transition length."""
    return {
        f"jump@{n_trans}": float(_velocity_jumps(positions, N_PAST, n_trans).mean() / change),
        f"skating@{n_trans}": float(foot_skating_ratio(positions, toes, fps, ground=INBETWEEN_GROUND).mean()),
    }


def inbetween_table(
    checkpoints: Sequence[Path],
    data: str | None,
    seed: int,
    sampler: str | None,
    steps: int | None,
    device: str,
    cache: Path | None,
    labels: Sequence[str] | None = None,
    methods: Sequence[str | None] | None = None,
    max_windows: int | None = None,
    transitions: Sequence[int] = TRANSITIONS,
    split: str = "test",
) -> dict[str, Any]:
    """L2Q, L2P and NPSS per transition length for the baselines and each model, on the test split
    (``split="val"``: the validation split, to choose settings on).

    Also per row: the foot-skating ratio over the windows and the velocity jump where the
    transition meets the known frames, as a multiple of the mean frame-to-frame change of velocity
    in the real windows.
    """
    from .editing import EditRequest
    from .metrics.inbetween import interpolation_baseline, l2p, l2q, npss, zero_velocity_baseline

    pipes, dataset, rep = _comparable_models(checkpoints, data, device, cache)
    test = benchmark_windows(dataset, rep, split, max_windows, seed)
    if not test:
        raise MofusionError(f"no {split} clip is 65 frames long")
    pos_mean, pos_std = position_normalisation(dataset, rep)
    toes = _toe_joints(rep.spec)
    names = ["zero-velocity", "interpolation"] + [
        labels[i] if labels else str(c) for i, c in enumerate(checkpoints)
    ]  # fmt: skip
    rows: dict[str, dict[str, Any]] = {n: {"name": n} for n in ["real", *names]}
    for i, pipe in enumerate(pipes):
        method = (methods[i] if methods else None) or pipe.edit_method
        cfg = pipe.config.sample
        sampling = {
            "sampler": sampler or cfg.sampler,
            "steps": cfg.steps if steps is None else steps,
            "last_step": cfg.last_step,
            "temperature": cfg.temperature,
            "smoothing_weight": cfg.smoothing_weight,
            "velocity_weight": cfg.velocity_weight,
        }
        rows[names[2 + i]].update(checkpoint=str(checkpoints[i]), method=method, sampling=sampling)
    for n_trans in transitions:
        window = N_PAST + n_trans + 1
        clips = [m.slice(0, window) for m in test]
        true_q, true_p = global_transforms(clips)
        change = np.linalg.norm(np.diff(true_p, n=2, axis=1), axis=-1).mean()
        rows["real"].update(_seams_and_skating(true_p, n_trans, change, toes, rep.spec.fps))
        target = N_PAST + n_trans
        outputs: dict[str, list[Motion]] = {
            "zero-velocity": baseline_motions(clips, zero_velocity_baseline),
            "interpolation": baseline_motions(clips, interpolation_baseline),
        }
        known = benchmark_known(window)
        for i, pipe in enumerate(pipes):
            requests = [EditRequest(window, known, motion=m) for m in clips]
            method = rows[names[2 + i]]["method"]
            results = pipe.edit(requests, seed=seed, method=method, sampler=sampler, steps=steps)
            outputs[names[2 + i]] = [r.motion for r in results]
        for name, motions in outputs.items():
            pred_q, pred_p = global_transforms(motions)
            span = slice(N_PAST, target)
            row = rows[name]
            row[f"L2Q@{n_trans}"] = l2q(pred_q[:, span], true_q[:, span])
            row[f"L2P@{n_trans}"] = l2p(pred_p[:, span], true_p[:, span], pos_mean, pos_std)
            row[f"NPSS@{n_trans}"] = npss(pred_q[:, span], true_q[:, span])
            row.update(_seams_and_skating(pred_p, n_trans, change, toes, rep.spec.fps))
    return {
        "split": split,
        "windows": len(test),
        "fps": rep.spec.fps,
        "transitions": list(transitions),
        "context_frames": N_PAST,
        "rows": list(rows.values()),
    }


def format_inbetween(table: dict[str, Any]) -> str:
    lines = [
        f"{table['windows']} {table.get('split', 'test')} windows at {table['fps']:g} fps, "
        f"{table['context_frames']} context frames"
    ]
    lengths = table["transitions"]
    width = max(28, *(len(row["name"]) + 2 for row in table["rows"]))
    for metric, digits in (("L2Q", 3), ("L2P", 3), ("NPSS", 4), ("jump", 2), ("skating", 3)):
        lines.append("")
        lines.append(f"{metric:<{width}}" + "".join(f"{n:>9}" for n in lengths))
        for row in table["rows"]:
            if f"{metric}@{lengths[0]}" in row:
                cells = "".join(f"{row[f'{metric}@{n}']:>9.{digits}f}" for n in lengths)
                lines.append(f"{row['name']:<{width}}{cells}")
    return "\n".join(lines)
