"""How close the export's IK fit gets to the generated positions, against how close it could get.

A BVH stores rotations of a skeleton with fixed bones; the model predicts joint positions whose
bones stretch a little from frame to frame. :func:`mofusion.ik.fit_rotations` moves the rotations
until forward kinematics reaches those positions as nearly as fixed bones allow. This prints, for
motions of the packaged text model, how far the predicted bones are from the skeleton's (what no
fit can remove) and, per iteration count, the fit's time and the distance left between the fitted
joints and the predicted ones. Where the second approaches the first, a better solver has nothing
left to gain and fewer iterations cost accuracy.

Usage: python bench/ik_fit.py [--threads 2] [--seconds 10] [--iterations 0 50 100 200 400]
       [--out bench/results/ik-fit-cpu.json]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from mofusion._io import atomic_write_json  # noqa: E402
from mofusion.checkpoint import default_checkpoint  # noqa: E402
from mofusion.ik import fit_rotations  # noqa: E402
from mofusion.pipeline import MotionPipeline  # noqa: E402
from mofusion.skeleton import Skeleton, forward_kinematics  # noqa: E402

PROMPTS = [
    "a person jumps and spins around",
    "a person walks forward",
    "someone dances happily",
    "a person kicks with the right leg",
]


def bone_mismatch_mm(skeleton: Skeleton, positions: torch.Tensor) -> torch.Tensor:
    """``|predicted bone length - the skeleton's|`` in mm, per frame and bone ``(..., T, J - 1)``."""
    parents = list(skeleton.parents)
    rest = torch.tensor(np.array(skeleton.offsets), dtype=positions.dtype)[1:].norm(dim=-1)
    bones = [
        (positions[..., j, :] - positions[..., parent, :]).norm(dim=-1)
        for j, parent in enumerate(parents)
        if parent >= 0  # the root alone, joint 0
    ]
    return 1000 * (torch.stack(bones, -1) - rest).abs()


def summary_mm(values: torch.Tensor) -> dict[str, float]:
    """Mean, 95th percentile and maximum of values already in mm."""
    flat = values.flatten().float()
    return {
        "mean": round(float(flat.mean()), 2),
        "p95": round(float(flat.quantile(0.95)), 1),
        "max": round(float(flat.max()), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--iterations", type=int, nargs="+", default=[0, 50, 100, 200, 400])
    parser.add_argument("--out", default="bench/results/ik-fit-cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = MotionPipeline.from_checkpoint(default_checkpoint(), "cpu")
    cond, mask = pipe.text_condition(PROMPTS)
    frames = round(args.seconds * pipe.fps)
    features = pipe.generate(len(PROMPTS), frames, seed=0, cond=cond, cond_mask=mask).features.double()
    skeleton = pipe.spec.skeleton
    targets = pipe.positions(features)  # what the export fits: the consolidated positions
    rotations, root = pipe.representation.decode_rotations(features)
    mismatch = summary_mm(bone_mismatch_mm(skeleton, targets))
    print(f"{len(PROMPTS)} motions of {frames} frames; predicted bones from the skeleton's (mm): {mismatch}")
    rows = []
    for iterations in args.iterations:
        start = time.perf_counter()
        fitted = (rotations, root)
        if iterations:
            fitted = fit_rotations(skeleton, rotations, root, targets, iterations)
        seconds = time.perf_counter() - start
        joints, _ = forward_kinematics(skeleton, *fitted)
        error = summary_mm(1000 * (joints - targets).norm(dim=-1))
        rows.append({"iterations": iterations, "seconds": round(seconds, 3), "joint_error_mm": error})
        print(f"  {iterations:4d} iterations {seconds:6.3f} s   joints from the predicted ones (mm): {error}")
    result = {
        "machine": platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "prompts": PROMPTS,
        "frames": frames,
        "bone_mismatch_mm": mismatch,
        "fits": rows,
        "default_iterations": 100,
    }
    atomic_write_json(args.out, result)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
