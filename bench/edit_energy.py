"""How much an edit's generated frames move, at several sampling temperatures, against the capture.

A lower ``sample.temperature`` draws closer to the likeliest fill (better L2 metrics) and may move
less; this measures that cost on two real clips with the packaged editing model: a 5-s continuation
of a walk (new frames against the input's pace) and the 3-s gap of an in-betweening (generated
frames against the captured ones). Mean joint speed in m/s at the input's frame rate.

Usage: python bench/edit_energy.py --data DATASET-2-FOLDER [--temperatures 1,0.3,0.15]
       [-c CHECKPOINT] [--more-continuations CLIP.bvh,...]
       [--out bench/results/bandai2-inbetween/edit-energy.json]

DATASET-2-FOLDER holds the unpacked Bandai-Namco dataset-2 BVH files (``mofusion`` unpacks the
archive into its cache: ``<cache>/archives/dataset-2-*/Bandai-Namco-Research-Motiondataset-2/data``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mofusion._io import atomic_write_text
from mofusion.checkpoint import default_checkpoint
from mofusion.editing import parse_ranges
from mofusion.errors import MofusionError
from mofusion.motion import Motion
from mofusion.pipeline import MotionPipeline
from mofusion.tasks import load_clip, run_edit

CONTINUATION = "dataset-2_walk_normal_008.bvh"
INBETWEEN, KEEP, GAP = "dataset-2_wave-both-hands_normal_012.bvh", "0-60,150-230", slice(60, 150)


def mean_speed(positions: np.ndarray, fps: float) -> float:
    return float(np.linalg.norm(np.diff(positions, axis=0), axis=-1).mean() * fps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("-c", "--checkpoint", type=Path, default=None)
    parser.add_argument("--temperatures", default="1,0.3,0.15")
    parser.add_argument(
        "--more-continuations",
        default="",
        help="comma-separated further dataset-2 clips to continue by 5 s (e.g. dataset-2_run_normal_003.bvh)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/bandai2-inbetween/edit-energy.json"))
    args = parser.parse_args()
    pipe = MotionPipeline.from_checkpoint(args.checkpoint or default_checkpoint(edit=True), "cpu")
    walk, wave = load_clip(args.data / CONTINUATION, pipe), load_clip(args.data / INBETWEEN, pipe)
    more = {name: load_clip(args.data / name, pipe) for name in args.more_continuations.split(",") if name}

    def captured(clip: Motion) -> np.ndarray:
        """The captured motion as the pipeline writes it back (every frame kept: the input itself)."""
        return run_edit(pipe, clip, np.ones(clip.num_frames, dtype=bool)).motion.positions()

    def continued(clip: Motion) -> float:
        """Mean speed of 5 s generated after the whole clip."""
        keep = np.ones(clip.num_frames, dtype=bool)
        positions = run_edit(pipe, clip, keep, extra_seconds=5.0, seed=0).motion.positions()
        return mean_speed(positions[clip.num_frames :], clip.fps)

    rows = [{"row": "capture", "continuation": mean_speed(captured(walk), walk.fps),
             "inbetween_gap": mean_speed(captured(wave)[GAP], wave.fps)}]  # fmt: skip
    if more:
        rows[0]["more_continuations"] = {name: mean_speed(captured(c), c.fps) for name, c in more.items()}
    for temperature in (float(t) for t in args.temperatures.split(",")):
        pipe.config.sample.temperature = temperature
        fill = run_edit(pipe, wave, parse_ranges(KEEP, wave.num_frames), seed=0).motion.positions()
        rows.append({"row": f"temperature {temperature:g}", "temperature": temperature,
                     "continuation": continued(walk),
                     "inbetween_gap": mean_speed(fill[GAP], wave.fps)})  # fmt: skip
        if more:
            rows[-1]["more_continuations"] = {name: continued(c) for name, c in more.items()}
    print(f"{'':<18}{'continuation (new 5 s)':>24}{'in-between gap':>18}")
    for row in rows:
        extra = "".join(f"  {n}: {v:.3f}" for n, v in row.get("more_continuations", {}).items())
        print(f"{row['row']:<18}{row['continuation']:>24.3f}{row['inbetween_gap']:>18.3f}{extra}")
    result = {"checkpoint": str(args.checkpoint or "packaged editing model"), "unit": "m/s, mean joint speed",
              "continuation": f"{CONTINUATION} + 5 s, seed 0",
              "inbetween": f"{INBETWEEN} --keep {KEEP}, seed 0", "rows": rows}  # fmt: skip
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except MofusionError as error:  # a missing or unreadable clip: one line, not a traceback
        print(f"edit_energy: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
