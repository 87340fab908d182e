"""Beat Align Score of the real dance-with-melody dances, against their own music and against another
dance's music (the mismatched-music baseline): the first two rows of the dance metric table, and a
check that the metric tells a dance that follows its music from one that does not.

Usage: python bench/dance_beats.py --data ../shared/data/dance-with-melody [--cache DIR]
       [--split test|all] [--out bench/results/dance-with-melody-beats.json]

Each dance is scored on the stretch of its song that it covers (config.json's start; its length);
the mismatched row pairs every dance with the song of the next dance in name order that is long
enough, cut to the same length. Mean and 95 % interval over dances.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mofusion.data.dance_melody import load_dance_with_melody, write_dance_split
from mofusion.metrics.dance import HOP, REFERENCE_FPS, beat_align_score, motion_beats, music_beats
from mofusion.metrics.kinematic import mean_ci

RATE = int(REFERENCE_FPS * HOP)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--split", default="all", choices=["all", "test"])
    parser.add_argument("--out", default="bench/results/dance-with-melody-beats.json")
    args = parser.parse_args()
    from mofusion.audio import read_audio

    started = time.perf_counter()
    dances = load_dance_with_melody(args.data, args.cache)
    split_path = write_dance_split(dances, args.cache)
    if args.split == "test":
        keep = set(json.loads(split_path.read_text())["test"])
        dances = [d for d in dances if d.name in keep]
    songs = {d.name: read_audio(d.audio, RATE) for d in dances}

    def segment(song: np.ndarray, start_s: float, seconds: float) -> np.ndarray | None:
        a, b = int(start_s * RATE), int((start_s + seconds) * RATE)
        return song[a:b] if b <= len(song) else None

    rows = []
    for i, dance in enumerate(dances):
        seconds = dance.num_frames / dance.fps
        own = segment(songs[dance.name], dance.music_start_seconds, seconds)
        kinematic = motion_beats(dance.positions, dance.fps)
        row = {"dance": dance.name, "genre": dance.genre, "seconds": round(seconds, 1),
               "motion_beats": len(kinematic)}  # fmt: skip
        if own is not None:
            beats = music_beats(own, RATE)
            row["music_beats"] = len(beats)
            row["bas_own_music"] = beat_align_score(beats, kinematic)
        for k in range(1, len(dances)):
            other = dances[(i + k) % len(dances)]
            piece = segment(songs[other.name], other.music_start_seconds, seconds)
            if piece is not None:
                row["mismatched_with"] = other.name
                row["bas_mismatched_music"] = beat_align_score(music_beats(piece, RATE), kinematic)
                break
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for key in ("bas_own_music", "bas_mismatched_music"):
        mean, ci = mean_ci(np.array([r[key] for r in rows if key in r]))
        summary[key] = {"mean": mean, "ci95": ci, "dances": sum(key in r for r in rows)}
    result = {"split": args.split, "dances": len(rows), "split_file": str(split_path), "summary": summary,
              "rows": rows, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for key, label in (("bas_own_music", "real dances, their own music"),
                       ("bas_mismatched_music", "real dances, another dance's music")):  # fmt: skip
        s = summary[key]
        print(f"{label:40} BAS {s['mean']:.4f} ± {s['ci95']:.4f}  ({s['dances']} dances)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
