"""Metric tables that put generated motions beside real ones, measured in the same run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DataConfig
from .data.dataset import ClipCollection, load_dataset
from .errors import MofusionError
from .metrics.kinematic import (
    bone_length_std,
    foot_skating_ratio,
    left_right_asymmetry,
    mean_ci,
    planted_toe_height,
)
from .pipeline import MotionPipeline
from .representation import MotionRepresentation, Normalizer


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
    positions = rep.decode_positions(features.double()).numpy()
    to_motion = pipe.to_motion if pipe is not None else rep.decode_motion
    fk = np.stack([to_motion(f).positions() for f in features])
    toes = [skeleton.index(spec.left_foot[-1]), skeleton.index(spec.right_foot[-1])]
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

    Positions come from the features' joint-position block (the positions the kinematic losses act
    on); ``skating_ratio_bvh`` is measured on what ``mofusion generate`` writes to a BVH file.
    """
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
    dataset = load_dataset(
        cfg,
        cache,
        normalizer=Normalizer(
            reference.normalizer.mean.cpu(), reference.normalizer.std.cpu(), reference.normalizer.bound.cpu()
        ),
    )
    rep = MotionRepresentation(reference.spec)
    frames = reference.frames_for(seconds)
    test = torch.from_numpy(real_windows(dataset.subset("test"), frames))
    train = torch.from_numpy(
        real_windows(dataset.subset("train"), frames, limit=max(num_samples, 200), seed=seed)
    )
    toes = [rep.spec.skeleton.index(rep.spec.left_foot[-1]), rep.spec.skeleton.index(rep.spec.right_foot[-1])]
    ground = planted_toe_height(rep.decode_positions(test.double()).numpy(), toes)
    rows = [_metrics("real test", test, rep, ground), _metrics("real train", train, rep, ground)]
    for i, (c, pipe) in enumerate(zip(checkpoints, pipes, strict=True)):
        generated = pipe.generate(num_samples, frames, seed=seed, sampler=sampler, steps=steps)
        row = _metrics(labels[i] if labels else str(c), generated.features, rep, ground, pipe)
        row["checkpoint"] = str(c)
        row["sampler"] = f"{sampler or pipe.config.sample.sampler} {steps or pipe.config.sample.steps}"
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
