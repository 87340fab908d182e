"""A minutes-long dance to a held-out song: one continuous dance from overlapping windows, and how
well the windows join (the velocity change at each seam against the mean frame-to-frame change).

Usage: python bench/dance_long.py --checkpoint RUN --data ../shared/data/dance-with-melody
       [--seconds 180] [--temperature T] [--cache DIR] [--render bench/results/dance-long.mp4]
       [--out bench/results/dance-long.json]

The song is the first test-split song that runs ``--seconds`` past its dance's start (else the
longest one, from its start). Also reported: the change inside windows (every frame that is not a
seam) and the same figure for the real dance of that song, and the wall time on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mofusion._io import atomic_write_text
from mofusion.audio import read_audio
from mofusion.dance import generate_dance, seam_jump, song_frames, window_starts
from mofusion.data.dance_melody import load_dance_with_melody, model_positions, write_dance_split
from mofusion.pipeline import MotionPipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blend", type=int, default=None, help="cross-faded frames (default: the library's)")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--render", default=None)
    parser.add_argument("--temperature", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--out", default="bench/results/dance-long.json")
    args = parser.parse_args()

    pipe = MotionPipeline.from_checkpoint(args.checkpoint, "auto")
    if args.temperature is not None:
        pipe.config.sample.temperature = args.temperature
    dances = {d.name: d for d in load_dance_with_melody(args.data, args.cache)}
    split = json.loads(write_dance_split(list(dances.values()), args.cache).read_text())
    lengths = {}
    for name in split["test"]:
        dance = dances[name]
        seconds = len(read_audio(dance.audio, 8000)) / 8000 - dance.music_start_seconds
        lengths[name] = seconds
    fits = [n for n in split["test"] if lengths[n] >= args.seconds]
    name = fits[0] if fits else max(lengths, key=lengths.get)  # type: ignore[arg-type]
    dance = dances[name]
    start = dance.music_start_seconds if fits else 0.0
    seconds = min(args.seconds, lengths[name] + (dance.music_start_seconds if not fits else 0.0))
    frames = song_frames(pipe, dance.audio, start, seconds, args.cache)
    torch.manual_seed(args.seed)
    began = time.perf_counter()
    (result,) = generate_dance(pipe, [frames], seed=args.seed, progress=True, blend=args.blend)
    wall = time.perf_counter() - began
    positions = result.positions.numpy()
    at_seams, mean_change = seam_jump(positions, result.seams)
    change = np.linalg.norm(positions[2:] - 2 * positions[1:-1] + positions[:-2], axis=-1).mean(-1)
    inside = np.delete(change, [s - 1 for s in result.seams])
    real = model_positions(dance, pipe.fps)
    _, real_change = seam_jump(real, [])
    report = {
        "checkpoint": str(args.checkpoint),
        "song": f"{name}/audio.mp3",
        "song_start_seconds": start,
        "seconds": len(positions) / pipe.fps,
        "frames": len(positions),
        "windows": len(window_starts(len(positions), pipe.config.data.window, pipe.config.data.window // 2)),
        "seams": len(result.seams),
        "window": pipe.config.data.window,
        "overlap": pipe.config.data.window // 2,
        "blend": args.blend if args.blend is not None else pipe.config.data.window // 2 // 8,
        "temperature": pipe.config.sample.temperature,
        "seam_change_m": at_seams,
        "mean_change_m": mean_change,
        "inside_change_m": float(inside.mean()),
        "seam_over_mean": at_seams / mean_change,
        "seam_over_inside": at_seams / float(inside.mean()),
        "real_dance_mean_change_m": real_change,
        "wall_seconds": wall,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{'cuda ' + torch.cuda.get_device_name() if pipe.device.type == 'cuda' else 'cpu'}",
    }
    for key, value in report.items():
        print(f"{key:>26}: {value}")
    if args.render:
        from mofusion.render import render_video

        skeleton = pipe.spec.skeleton
        render_video(
            args.render, [positions], skeleton.parents, pipe.fps, skeleton.names,
            [f"{name} (held-out song), {len(positions) / pipe.fps:.0f} s"],
            audio=dance.audio, audio_start=start,
        )  # fmt: skip
        print(args.render)
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
