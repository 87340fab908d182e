"""Speed of edits on the step runner against the plain loop, in one process.

Edits (in-betweening, continuation, and every window of a whole-song dance after the first) hold
known frames at every denoising step. They ran the plain loop of ``sample_loop`` until the step
runner learnt to hold them (``fast.EditMode``); this times the same calls with the pipeline's
``acceleration="none"`` (the plain loop) and ``"auto"`` (the runner on a CPU, a CUDA graph on a
GPU), each timed call of one alternating with the other's (this machine drifts within a minute),
and reports the largest difference of their results (same seeds: the same motions).

Cases: the packaged editing model's 3-s in-betweening of a waving clip and 5-s continuation of a
walk as ``mofusion edit`` and ``continue`` run them (``run_edit``: sampling, decoding, IK), at its
own 5 steps and at 50; with ``--dance-checkpoint``, a dance of ``--dance-seconds`` to a held-out
song (``generate_dance``: features only).

Usage: python bench/edit_speed.py --data DATASET-2-FOLDER [--dance-checkpoint RUN --songs
       ../shared/data/dance-with-melody] [--threads 2] [--out bench/results/edit-speed-cpu.json]

DATASET-2-FOLDER holds the unpacked Bandai-Namco dataset-2 BVH files (``mofusion`` unpacks the
archive into its cache: ``<cache>/archives/dataset-2-*/Bandai-Namco-Research-Motiondataset-2/data``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from ab_revisions import alternate  # noqa: E402

from mofusion._io import atomic_write_json  # noqa: E402
from mofusion.checkpoint import default_checkpoint  # noqa: E402
from mofusion.editing import parse_ranges  # noqa: E402
from mofusion.errors import MofusionError  # noqa: E402
from mofusion.pipeline import MotionPipeline  # noqa: E402
from mofusion.tasks import load_clip, run_edit  # noqa: E402

CONTINUATION = "dataset-2_walk_normal_008.bvh"
INBETWEEN, KEEP = "dataset-2_wave-both-hands_normal_012.bvh", "0-60,150-230"
SONG = "DANCE_C_4"  # a test dance's song (held out of training)


def timed(calls: dict[str, Callable[[], np.ndarray]], repeats: int) -> dict[str, object]:
    """Median and minimum seconds of each call, the calls alternating (``ab_revisions.alternate``);
    the largest difference of their outputs (the first call's output against each other's: joint
    positions of an edit in the file's units, features of a dance) beside the largest output value."""
    outputs = {name: call() for name, call in calls.items()}  # warm-up (builds the runners)
    seconds = alternate(calls, repeats, warmup=False)
    first = next(iter(outputs.values()))
    difference = max(float(np.abs(out - first).max()) for out in outputs.values())
    row: dict[str, object] = {
        name: {"median_s": round(statistics.median(s), 4), "min_s": round(min(s), 4)}
        for name, s in seconds.items()
    }
    row["max_output_difference"] = difference
    row["largest_output_value"] = float(np.abs(first).max())
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument(
        "-c", "--checkpoint", type=Path, default=None, help="an editing model (default: packaged)"
    )
    parser.add_argument("--dance-checkpoint", type=Path, default=None)
    parser.add_argument("--songs", type=Path, default=Path("../shared/data/dance-with-melody"))
    parser.add_argument("--dance-seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/results/edit-speed-cpu.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or default_checkpoint(edit=True)
    pipes = {mode: MotionPipeline.from_checkpoint(checkpoint, args.device, mode) for mode in ("none", "auto")}
    wave = load_clip(args.data / INBETWEEN, pipes["none"])
    walk = load_clip(args.data / CONTINUATION, pipes["none"])
    keep = parse_ranges(KEEP, wave.num_frames)
    own_steps = pipes["none"].config.sample.steps
    rows: dict[str, object] = {}
    for steps in (own_steps, 50):

        def inbetween(pipe: MotionPipeline, steps: int = steps) -> np.ndarray:
            return run_edit(pipe, wave, keep, seed=0, steps=steps).motion.positions()

        def continuation(pipe: MotionPipeline, steps: int = steps) -> np.ndarray:
            every = np.ones(walk.num_frames, dtype=bool)
            return run_edit(pipe, walk, every, extra_seconds=5.0, seed=0, steps=steps).motion.positions()

        for name, task in (("in-betweening, 3-s gap", inbetween), ("continuation, 5 s", continuation)):
            label = f"{name}, {steps} steps"
            rows[label] = timed(
                {mode: (lambda p=p, task=task: task(p)) for mode, p in pipes.items()}, args.repeats
            )
            print(label, json.dumps(rows[label]), flush=True)
    if args.dance_checkpoint is not None:
        from mofusion.dance import generate_dance, song_frames
        from mofusion.data.dance_melody import load_dance_with_melody

        dance_pipes = {
            mode: MotionPipeline.from_checkpoint(args.dance_checkpoint, args.device, mode)
            for mode in ("none", "auto")
        }
        dance = next(d for d in load_dance_with_melody(args.songs) if d.name == SONG)
        frames = song_frames(dance_pipes["none"], dance.audio, dance.music_start_seconds, args.dance_seconds)

        def dancing(pipe: MotionPipeline) -> np.ndarray:
            (result,) = generate_dance(pipe, [frames], seed=0)
            return result.features.numpy()

        label = f"dance to {SONG}'s song, {args.dance_seconds:g} s"
        rows[label] = timed(
            {mode: (lambda p=p: dancing(p)) for mode, p in dance_pipes.items()}, max(1, args.repeats // 2)
        )
        print(label, json.dumps(rows[label]), flush=True)
    print(f"\n{'case':<45} {'plain loop s':>12} {'runner s':>10} {'ratio':>7} {'max diff':>9}")
    for label, row in rows.items():
        plain, runner = row["none"]["median_s"], row["auto"]["median_s"]  # type: ignore[index]
        difference = row["max_output_difference"]
        print(f"{label:<45} {plain:>12.3f} {runner:>10.3f} {runner / plain:>7.2f} {difference:>9.1e}")
    result = {
        "machine": platform.machine(),
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "edit_checkpoint": str(checkpoint),
        "dance_checkpoint": None if args.dance_checkpoint is None else str(args.dance_checkpoint),
        "cases": rows,
    }
    atomic_write_json(args.out, result)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MofusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
