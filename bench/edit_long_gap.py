"""In-betweening over a gap longer than the benchmark's, on *validation* windows: how far the root
travels, how well each editing model follows it, and how much the feet slide.

The benchmark (``mofusion evaluate inbetween``) stops at 45 frames, where the root rarely goes far;
a user's keyframes can be metres apart. Windows of ``10 + gap + 1`` frames from the validation clips
(every ``--offset`` frames, turned to face +Z at the last context frame, an evenly drawn subset of
``--max-windows``), 10 context frames and one target frame, DDPM (each model's steps unless
``--steps``), one seed. Rows: the interpolation baseline (linear root, slerp) and each checkpoint
with its own sample settings. Columns: L2P and L2Q over the gap, the distance the root travels from
the last context frame to the target (the windows' median), the velocity jump at both ends over the
real windows' mean frame-to-frame change, and the foot-skating ratio over the whole window (real
windows beside).

Usage: python bench/edit_long_gap.py -c CKPT [-c CKPT ...] --data ../shared/data/bandai-namco
       [--gap 90] [--offset 60] [--max-windows 80] [--out FILE.json]
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch
from _validation import load_validation, sampling_steps, save_result, validation_parser

from mofusion.editing import EditRequest
from mofusion.evaluation import (
    INBETWEEN_GROUND,
    N_PAST,
    _toe_joints,
    _velocity_jumps,
    baseline_motions,
    benchmark_known,
    global_transforms,
    position_normalisation,
)
from mofusion.metrics.inbetween import interpolation_baseline, l2p, l2q
from mofusion.metrics.kinematic import foot_skating_ratio


def main() -> int:
    parser = validation_parser(__doc__, max_windows=80)
    parser.add_argument("--gap", type=int, default=90)
    parser.add_argument("--offset", type=int, default=60)
    args = parser.parse_args()
    started = time.perf_counter()
    length = N_PAST + args.gap + 1
    pipes, dataset, rep, windows = load_validation(args, length, args.offset)
    if not windows:
        print(f"no validation clip is {length} frames long; try a shorter --gap")
        return 2
    mean, std = position_normalisation(dataset, rep)
    toes = _toe_joints(rep.spec)
    fps = rep.spec.fps
    true_q, true_p = global_transforms(windows)
    span = slice(N_PAST, length - 1)
    change = float(np.linalg.norm(np.diff(true_p, n=2, axis=1), axis=-1).mean())
    travel = np.linalg.norm((true_p[:, -1, 0] - true_p[:, N_PAST - 1, 0])[:, [0, 2]], axis=-1)
    outputs = {"interpolation": baseline_motions(windows, interpolation_baseline)}
    known = benchmark_known(length)
    for checkpoint, pipe in zip(args.checkpoint, pipes, strict=True):
        results = pipe.edit(
            [EditRequest(length, known, motion=m) for m in windows], seed=0, sampler="ddpm", steps=args.steps
        )
        outputs[str(checkpoint)] = [res.motion for res in results]
    rows = [
        {
            "row": "real",
            "skating": float(foot_skating_ratio(true_p, toes, fps, ground=INBETWEEN_GROUND).mean()),
        }
    ]
    for name, motions in outputs.items():
        pred_q, pred_p = global_transforms(motions)
        rows.append({
            "row": name,
            "L2P": l2p(pred_p[:, span], true_p[:, span], mean, std),
            "L2Q": l2q(pred_q[:, span], true_q[:, span]),
            "jump": float(_velocity_jumps(pred_p, N_PAST, args.gap).mean() / change),
            "skating": float(foot_skating_ratio(pred_p, toes, fps, ground=INBETWEEN_GROUND).mean()),
        })  # fmt: skip
    print(f"{len(windows)} validation windows, gap {args.gap} frames ({args.gap / fps:.1f} s), root "
          f"travel over the gap: median {np.median(travel):.2f} m, max {travel.max():.2f} m")  # fmt: skip
    for row in rows:
        figures = "  ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "row")
        print(f"{row['row']:<45} {figures}")
    result = {
        "split": "val",
        "windows": len(windows),
        "gap": args.gap,
        "fps": fps,
        "root_travel_median_m": float(np.median(travel)),
        "root_travel_max_m": float(travel.max()),
        "sampler": "ddpm " + "/".join(str(sampling_steps(args, p)) for p in pipes),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
