"""Two acceleration settings of this working tree against each other, in one process: sampling speed
of the packaged text model, and how far the motions move.

Why: a speed-up is measured against the setting without it, on the same machine at the same time.
bench/sample.py runs its rows one after another, and this machine's speed drifts by up to 25 %
within minutes (its channels-last row once came out slower while the prompt encoding inside it,
which the setting does not touch, was 27 % slower too). Here every timed call with one setting is
followed by the same call with the other, in alternating order, as bench/ab_revisions.py does for
two revisions (whose calls it reuses):

- ``MotionPipeline.generate`` at batch 1 (prompt encoding and the decoded positions included),
- the step runner at 50 DDPM steps, batch 1,
- a batch of ``--batch`` at 20 DDPM steps (samples per second),

and the largest difference of ``generate()``'s features for seed 0 between the two.

Usage: python bench/ab_settings.py --a runner+channels-last --b bf16-all+channels-last
       [--device cpu] [--repeats 15] [--threads 2] [--out bench/results/ab-settings-cpu.json]
On a GPU machine: --device cuda --text-encoder .devcache/minilm-trimmed, e.g. --a
bf16-all+fused+graph --b bf16-all+fused+channels-last+graph.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from ab_revisions import Revision, add_timing_arguments, summarise, time_figures, write_comparison

import mofusion
from mofusion.checkpoint import default_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="the first setting (--acceleration syntax)")
    parser.add_argument("--b", required=True, help="the second setting")
    add_timing_arguments(parser, "bench/results/ab-settings-cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    checkpoint = default_checkpoint()
    settings = {"a": args.a, "b": args.b}
    revisions = {name: Revision(mofusion, args, Path(checkpoint), how) for name, how in settings.items()}
    features = {name: rev.generate() for name, rev in revisions.items()}
    timings = time_figures(revisions, args.repeats, args.batch)
    summary = summarise(timings, args.batch)
    header = {
        "what": "two acceleration settings of one tree in one process, timed calls alternating",
        "a": args.a,
        "b": args.b,
    }
    write_comparison(args, settings, features, timings, summary, header, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
