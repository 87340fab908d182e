"""Where an editing model's in-betweening error lies: L2P of the root joint alone and the mean
normalised error of the body relative to the root, beside the full L2P, on *validation* windows.

The in-betweening benchmark's protocol (10 context frames, a transition, one target frame; windows
of 65 frames every 40, turned to face +Z; the same 120 windows as ``bench/edit_smoothing.py``), each
checkpoint sampled once with its own settings (DDPM, its own steps unless ``--steps``).
``--velocity-weight``, ``--temperature`` and ``--smoothing`` override ``sample.velocity_weight`` (0:
positions decoded without the velocity features), ``sample.temperature`` and
``sample.smoothing_weight``. The last column, L2P with the generated body moved onto the true root
path, is what a perfect root path would leave; the two before it split that into the root's height
and its ground position (L2P with only that part of the root moved to the truth, the body carried
along), and ``y_share`` is the share of the squared, normalised error that is vertical: L2P
normalises each joint's axis by its spread over training windows, 2 cm for the hips' height against
12 and 62 cm on the ground, so millimetres of height weigh as much as centimetres on the ground.

Usage: python bench/edit_l2p_parts.py -c CKPT [-c CKPT ...] --data ../shared/data/bandai-namco
       [--transition 5] [--velocity-weight W] [--temperature T] [--smoothing S] [--out FILE.json]
"""

from __future__ import annotations

import numpy as np
from _validation import load_validation, save_result, validation_parser

from mofusion.editing import EditRequest
from mofusion.evaluation import (
    N_PAST,
    baseline_motions,
    benchmark_known,
    global_transforms,
    position_normalisation,
)
from mofusion.metrics.inbetween import interpolation_baseline, l2p


def main() -> int:
    parser = validation_parser(__doc__)
    parser.add_argument("--transition", type=int, default=5)
    parser.add_argument("--velocity-weight", type=float, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--smoothing", type=float, default=None)
    args = parser.parse_args()
    pipes, dataset, rep, windows = load_validation(args)
    mean, std = position_normalisation(dataset, rep)
    window = N_PAST + args.transition + 1
    clips = [m.slice(0, window) for m in windows]
    true_p = global_transforms(clips)[1]
    span = slice(N_PAST, window - 1)
    known = benchmark_known(window)
    print(f"spread of the hips over training windows (x/y/z, m): {'/'.join(f'{s:.3f}' for s in std[0])}")

    def parts(pred_p: np.ndarray) -> dict[str, object]:
        body_pred = pred_p[:, span] - pred_p[:, span, :1]
        body_true = true_p[:, span] - true_p[:, span, :1]
        root_error = true_p[:, span, :1] - pred_p[:, span, :1]
        squared = ((pred_p[:, span] - true_p[:, span]) / std) ** 2
        return {
            "L2P": l2p(pred_p[:, span], true_p[:, span], mean, std),
            "root_L2P": l2p(pred_p[:, span, :1], true_p[:, span, :1], mean[:1], std[:1]),
            "body_error": float(np.linalg.norm((body_pred - body_true) / std, axis=-1).mean()),
            "L2P_true_root_height": l2p(pred_p[:, span] + root_error * [0, 1, 0], true_p[:, span], mean, std),
            "L2P_true_root_ground": l2p(pred_p[:, span] + root_error * [1, 0, 1], true_p[:, span], mean, std),
            "L2P_on_true_root": l2p(body_pred + true_p[:, span, :1], true_p[:, span], mean, std),
            "root_error_m": np.abs(root_error).mean(axis=(0, 1, 2)).tolist(),
            "y_share": float(squared[..., 1].sum() / squared.sum()),
        }

    def report(name: str, row: dict) -> None:
        print(f"{name}: L2P {row['L2P']:.3f}  root L2P {row['root_L2P']:.3f}  "
              f"body relative to root {row['body_error']:.3f}  "
              f"L2P with the true root height {row['L2P_true_root_height']:.3f}, ground position "
              f"{row['L2P_true_root_ground']:.3f}, both {row['L2P_on_true_root']:.3f}  "
              f"root error x/y/z (m) {'/'.join(f'{e:.4f}' for e in row['root_error_m'])}  "
              f"vertical share {row['y_share']:.2f}", flush=True)  # fmt: skip

    interpolation = parts(global_transforms(baseline_motions(clips, interpolation_baseline))[1])
    report("interpolation", interpolation)
    rows = []
    for checkpoint, pipe in zip(args.checkpoint, pipes, strict=True):
        if args.velocity_weight is not None:
            pipe.config.sample.velocity_weight = args.velocity_weight
        if args.temperature is not None:
            pipe.config.sample.temperature = args.temperature
        if args.smoothing is not None:
            pipe.config.sample.smoothing_weight = args.smoothing
        requests = [EditRequest(window, known, motion=m) for m in clips]
        results = pipe.edit(requests, seed=0, sampler="ddpm", steps=args.steps)
        pred_p = global_transforms([r.motion for r in results])[1]
        row = {"checkpoint": str(checkpoint), **parts(pred_p)}
        rows.append(row)
        report(str(checkpoint), row)
    result = {"split": "val", "windows": len(windows), "transition": args.transition,
              "velocity_weight": args.velocity_weight, "temperature": args.temperature,
              "smoothing": args.smoothing, "interpolation_root_L2P": interpolation["root_L2P"],
              "hips_spread_m": std[0].tolist(), "interpolation": interpolation, "rows": rows}  # fmt: skip
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
