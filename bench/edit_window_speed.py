"""How much an editing model's fills move, over many *validation* windows, against the capture.

A sampler that draws nearer the likeliest fill (lower temperature, fewer denoising steps) scores
better in L2 and may move less; ``bench/edit_energy.py`` measures that on a few chosen clips, this
bench over the in-betweening benchmark's validation windows (10 context frames, a transition, one
target frame; the same 120 windows as ``bench/edit_smoothing.py``). Per transition length and
checkpoint (each sampled once with its own settings, DDPM): the mean joint speed over the
transition (from the last context frame to the target frame) over the captured one's, for all
joints and for the hands alone (arm gestures are what a fill that averages possible motions loses
first), and the mean per-window ratio.

Usage: python bench/edit_window_speed.py -c CKPT [-c CKPT ...] --data ../shared/data/bandai-namco
       [--transitions 15,30,45] [--out FILE.json]
"""

from __future__ import annotations

import numpy as np
from _validation import load_validation, sampling_steps, save_result, validation_parser

from mofusion.editing import EditRequest
from mofusion.evaluation import N_PAST, benchmark_known, global_transforms


def joint_speed(positions: np.ndarray) -> np.ndarray:
    """Mean joint speed per window (m per frame) of ``(N, T, J, 3)`` positions."""
    return np.linalg.norm(np.diff(positions, axis=1), axis=-1).mean(axis=(1, 2))


def main() -> int:
    parser = validation_parser(__doc__)
    parser.add_argument("--transitions", default="15,30,45")
    args = parser.parse_args()
    pipes, _, rep, windows = load_validation(args)
    names = rep.spec.skeleton.names
    hands = [i for i, name in enumerate(names) if name.lower().startswith("hand")]
    rows = []
    for transition in (int(t) for t in args.transitions.split(",")):
        window = N_PAST + transition + 1
        clips = [m.slice(0, window) for m in windows]
        span = slice(N_PAST - 1, window)
        true_p = global_transforms(clips)[1][:, span]
        true_all, true_hands = joint_speed(true_p), joint_speed(true_p[:, :, hands])
        requests = [EditRequest(window, benchmark_known(window), motion=m) for m in clips]
        for checkpoint, pipe in zip(args.checkpoint, pipes, strict=True):
            results = pipe.edit(requests, seed=0, sampler="ddpm", steps=args.steps)
            pred_p = global_transforms([r.motion for r in results])[1][:, span]
            pred_all, pred_hands = joint_speed(pred_p), joint_speed(pred_p[:, :, hands])
            row = {
                "transition": transition,
                "checkpoint": str(checkpoint),
                "steps": sampling_steps(args, pipe),
                "last_step": pipe.config.sample.last_step,
                "speed_ratio": float(pred_all.mean() / true_all.mean()),
                "hand_speed_ratio": float(pred_hands.mean() / true_hands.mean()),
                "mean_window_ratio": float((pred_all / np.maximum(true_all, 1e-9)).mean()),
            }
            rows.append(row)
            print(f"{transition} frames  {checkpoint} ({row['steps']} steps to step {row['last_step']}):"
                  f" speed {row['speed_ratio']:.3f}"
                  f" of the capture, hands {row['hand_speed_ratio']:.3f}, per window"
                  f" {row['mean_window_ratio']:.3f}", flush=True)  # fmt: skip
    save_result(args.out, {"split": "val", "windows": len(windows), "hands": [names[i] for i in hands],
                           "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
