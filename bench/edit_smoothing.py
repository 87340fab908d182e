"""Choose ``sample.smoothing_weight``, ``sample.temperature`` and ``sample.velocity_weight`` for an
editing model on *validation* windows.

The in-betweening benchmark's protocol (10 context frames, a transition, one target frame; windows
of 65 frames every 40, turned to face +Z) on the validation split: each transition length is
sampled once per temperature and the same samples are decoded with every smoothing weight (and,
with ``--velocity-weights``, every weight of the velocity features when positions are
consolidated), so rows of one temperature differ only by the decoding. Prints L2P, L2Q, NPSS and
the velocity jump at the keyframes per setting beside the interpolation baseline, and writes them
as JSON. The test split is left for the reported table (``mofusion evaluate inbetween``).

Usage: python bench/edit_smoothing.py -c RUN_OR_EXPORT --data ../shared/data/bandai-namco
       [--weights 0,64,256,1024] [--velocity-weights 16] [--temperatures 1] [--transitions 15,30]
       [--max-windows 120]
       [--out bench/results/bandai2-inbetween/smoothing-val.json]
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch
from _validation import load_validation, sampling_steps, save_result, validation_parser

from mofusion.editing import EditRequest
from mofusion.evaluation import (
    N_PAST,
    _velocity_jumps,
    baseline_motions,
    benchmark_known,
    global_transforms,
    position_normalisation,
)
from mofusion.metrics.inbetween import interpolation_baseline, l2p, l2q, npss
from mofusion.motion import Motion


def main() -> int:
    parser = validation_parser(
        __doc__, several=False, out=Path("bench/results/bandai2-inbetween/smoothing-val.json")
    )
    parser.add_argument("--weights", default="0,64,256,1024")
    parser.add_argument(
        "--velocity-weights", default=None, help="sample.velocity_weight values (default: the checkpoint's)"
    )
    parser.add_argument("--temperatures", default="1", help="sampling temperatures, each sampled once")
    parser.add_argument("--transitions", default="15,30")
    parser.add_argument("--method", default=None, help="replace, condition or both (default: the model's)")
    args = parser.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    (pipe,), dataset, rep, windows = load_validation(args)
    velocity_weights = (
        [pipe.config.sample.velocity_weight]
        if args.velocity_weights is None
        else [float(w) for w in args.velocity_weights.split(",")]
    )
    mean, std = position_normalisation(dataset, rep)
    generate = pipe.generate
    rows = []
    started = time.perf_counter()
    for n_trans in (int(n) for n in args.transitions.split(",")):
        window = N_PAST + n_trans + 1
        clips = [m.slice(0, window) for m in windows]
        true_q, true_p = global_transforms(clips)
        change = float(np.linalg.norm(np.diff(true_p, n=2, axis=1), axis=-1).mean())
        span = slice(N_PAST, window - 1)

        def scores(motions: list[Motion], span: slice = span, n_trans: int = n_trans, change: float = change,
                   true_q: np.ndarray = true_q, true_p: np.ndarray = true_p) -> dict[str, float]:  # fmt: skip
            q, p = global_transforms(motions)
            return {"L2P": l2p(p[:, span], true_p[:, span], mean, std),
                    "L2Q": l2q(q[:, span], true_q[:, span]),
                    "NPSS": npss(q[:, span], true_q[:, span]),
                    "jump": float(_velocity_jumps(p, N_PAST, n_trans).mean() / change)}  # fmt: skip

        rows.append({"transition": n_trans, "row": "interpolation",
                     **scores(baseline_motions(clips, interpolation_baseline))})  # fmt: skip
        known = benchmark_known(window)
        requests = [EditRequest(window, known, motion=m) for m in clips]
        for temperature in temperatures:
            memo: dict[str, object] = {}

            def once(*a, _memo=memo, **k):  # type: ignore[no-untyped-def]
                """The first call samples; later calls (other weights) reuse its samples."""
                if "g" not in _memo:
                    _memo["g"] = generate(*a, **k)
                return _memo["g"]

            pipe.generate = once  # type: ignore[method-assign]
            pipe.config.sample.temperature = temperature
            for velocity_weight in velocity_weights:
                pipe.config.sample.velocity_weight = velocity_weight
                for weight in weights:
                    pipe.config.sample.smoothing_weight = weight
                    results = pipe.edit(
                        requests, seed=0, method=args.method, sampler="ddpm", steps=args.steps
                    )
                    name = f"smoothing {weight:g}"
                    if len(temperatures) > 1:
                        name += f", temperature {temperature:g}"
                    if len(velocity_weights) > 1:
                        name += f", velocity {velocity_weight:g}"
                    row = {"transition": n_trans, "row": name, "smoothing_weight": weight,
                           "velocity_weight": velocity_weight, "temperature": temperature,
                           **scores([x.motion for x in results])}  # fmt: skip
                    rows.append(row)
        pipe.generate = generate  # type: ignore[method-assign]
        for row in rows:
            if row["transition"] == n_trans:
                print(f"{n_trans:>3} frames  {row['row']:<30} L2P {row['L2P']:.3f}  L2Q {row['L2Q']:.3f}  "
                      f"NPSS {row['NPSS']:.4f}  jump {row['jump']:.2f}", flush=True)  # fmt: skip
    result = {
        "checkpoint": str(args.checkpoint),
        "split": "val",
        "windows": len(windows),
        "method": args.method or pipe.edit_method,
        "sampler": f"ddpm {sampling_steps(args, pipe)}",
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
