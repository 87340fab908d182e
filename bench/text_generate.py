"""Wall time of the README's main job: ``mofusion generate --text ... --seconds 6 --out walk.bvh
--render walk.mp4`` with the packaged model, as a user runs it (a new process each time), plus where
the time goes inside one process.

Usage: python bench/text_generate.py [--runs 3] [--threads N] [--seconds 6] [--no-render]
       [--out bench/results/text-generate.json]

Goals: the main job (6 s, BVH + mp4) at most 10 s in all on 2 CPU cores; a 10-s motion written as
BVH (``--seconds 10 --no-render``) at most 5 s. Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a person walks happily"


def cli_runs(runs: int, env: dict[str, str], seconds: float, render: bool) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            command = [sys.executable, "-c", "import sys; from mofusion.cli import main; sys.exit(main())",
                       "generate", "--text", PROMPT, "--seconds", str(seconds), "--out", f"{tmp}/walk{i}.bvh",
                       *(["--render", f"{tmp}/walk{i}.mp4"] if render else []), "-q"]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, capture_output=True)
            times.append(time.perf_counter() - start)
    return times


def stages(seconds: float, render: bool) -> dict[str, float]:
    """One in-process pass, timed stage by stage."""
    marks = [("start", time.perf_counter())]
    from mofusion.checkpoint import default_checkpoint
    from mofusion.export import save_bvh
    from mofusion.pipeline import MotionPipeline
    from mofusion.render import render_video

    marks.append(("import", time.perf_counter()))
    pipe = MotionPipeline.from_checkpoint(default_checkpoint(), "cpu")
    marks.append(("load model", time.perf_counter()))
    tokens, mask = pipe.text_condition([PROMPT])
    marks.append(("encode text", time.perf_counter()))
    result = pipe.generate(1, pipe.frames_for(seconds), cond=tokens, cond_mask=mask)
    sampler = pipe.config.sample
    marks.append((f"sample ({sampler.sampler.upper()} {sampler.steps}, guided)", time.perf_counter()))
    motions = pipe.to_motions(result.features)
    marks.append(("positions + IK", time.perf_counter()))
    with tempfile.TemporaryDirectory() as tmp:
        save_bvh(Path(tmp) / "walk.bvh", motions, pipe.file_scale)
        marks.append(("write BVH", time.perf_counter()))
        if render:
            skeleton = pipe.spec.skeleton
            render_video(Path(tmp) / "walk.mp4", list(result.positions.numpy()), skeleton.parents, pipe.fps)
            marks.append(("render mp4", time.perf_counter()))
    return {name: round(t - marks[i][1], 3) for i, (name, t) in enumerate(marks[1:])}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="OMP threads (0: torch's default)")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--no-render", action="store_true")
    parser.add_argument("--out", default="bench/results/text-generate.json")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    render = not args.no_render
    times = cli_runs(args.runs, env, args.seconds, render)
    breakdown = stages(args.seconds, render)
    video = " --render walk.mp4" if render else ""
    report = {
        "command": f'mofusion generate --text "{PROMPT}" --seconds {args.seconds:g} --out walk.bvh{video}',
        "runs_s": [round(t, 2) for t in times],
        "median_s": round(statistics.median(times), 2),
        "in_process_stages_s": breakdown,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
