"""Two revisions of the library against each other on this machine, in one process: sampling speed
of the packaged text model, the operations of one guided step, and whether the motions are the same.

Why: a speed-up of the sampling code is only worth its figures when the old and the new code ran on
the same machine at the same time. This machine's speed drifts by 25 % within a minute, so the two
revisions are not run one after the other: ``--base`` (a git revision) is extracted and imported
as a second package, ``mofusion_base`` (the package imports itself relatively), beside the working
tree's ``mofusion``, and every timed call of one is followed by the same call of the other, in
alternating order. On the packaged model at batch 1 of ``--frames`` frames it

- counts the ATen operations of one guided step of each revision's StepRunner, in float32 and
  under bf16 autocast (bench/roofline.py's trace);
- times ``MotionPipeline.generate`` with each revision's defaults for this device (prompt encoding
  and the decoded positions included: the issue's end-to-end figure), the step runner at 50 DDPM
  steps (the figure that compares with the MDM-sized transformer at equal steps), and a batch of
  ``--batch`` at the default 20 steps through the step runner (samples per second);
- compares generate()'s features for seed 0 between the revisions.

Usage: python bench/ab_revisions.py --base 1277d24 [--repeats 15] [--threads 2]
       [--out bench/results/ab-sampling-cpu.json]
On a GPU machine (no git there): here ``--base REV --export-base .devcache/base``, carry that
folder, there ``--base-tree .devcache/base --device cuda --text-encoder .devcache/minilm-trimmed``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from roofline import FEATURES, trace_step  # noqa: E402
from sample import PROMPT, sync  # noqa: E402

from mofusion._io import atomic_write_json  # noqa: E402

BASE_PACKAGE = "mofusion_base"


def extract_package(revision: str, into: Path) -> None:
    """``src/mofusion`` of ``revision`` as the package :data:`BASE_PACKAGE` under ``into``: tracked
    files, without the packaged weights (both revisions load the working tree's, so the folder is
    small enough to carry to a GPU machine, which has no git history)."""
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src/mofusion"], check=True, capture_output=True
    ).stdout
    unpacked = into / "unpacked"
    with tarfile.open(fileobj=BytesIO(data)) as archive:
        archive.extractall(unpacked, filter="data")
    shutil.rmtree(unpacked / "src" / "mofusion" / "pretrained")
    shutil.move(unpacked / "src" / "mofusion", into / BASE_PACKAGE)
    shutil.rmtree(unpacked)
    (into / "REVISION").write_text(revision + "\n")


class Revision:
    """One revision's packaged pipeline and the calls that are timed; ``acceleration``: its
    settings (``auto``: that revision's defaults for the device; bench/ab_settings.py times two
    settings of one revision)."""

    def __init__(
        self, package: ModuleType, args: argparse.Namespace, checkpoint: Path, acceleration: str = "auto"
    ) -> None:
        self.package = package
        self.frames = args.frames
        self.device = torch.device(args.device)
        pipeline = importlib.import_module(f"{package.__name__}.pipeline")
        self.diffusion = importlib.import_module(f"{package.__name__}.diffusion")
        self.pipe = pipeline.MotionPipeline.from_checkpoint(checkpoint, args.device, acceleration)
        if args.text_encoder:  # a copy of the encoder carried to a machine without the package's
            self.pipe.config = self.pipe.config.updated({"condition": {"text_encoder": args.text_encoder}})

    def ops_per_step(self, bf16: bool) -> int:
        """ATen operations of one guided step at batch 1 on the CPU (random tokens of the prompt's
        shape; the CPU's autocast, which keeps normalisations in bf16)."""
        model = copy.deepcopy(self.pipe.model).cpu()
        return len(trace_step(model, self.pipe, 1, self.frames, bf16, self.package.__name__))

    def generate(self) -> torch.Tensor:
        cond, mask = self.pipe.text_condition([PROMPT])
        return self.pipe.generate(1, self.frames, seed=0, cond=cond, cond_mask=mask).features

    def run_steps(self, batch: int, steps: int) -> torch.Tensor:
        """The step runner as ``generate()`` builds and keeps it, with the library's acceleration for
        the device and batch (a CPU: float32; a GPU: a CUDA graph, since 82cf937 all in bf16)."""
        pipe = self.pipe
        cond, mask = pipe.text_condition([PROMPT] * batch)
        clip = pipe.normalizer.bound if pipe.config.sample.clip_x0 else None
        sampler = self.diffusion.make_sampler(pipe.schedule, "ddpm", steps, 0.0, clip)
        shape = (batch, FEATURES, self.frames)
        runner = pipe._runner(sampler, shape, cond, mask, pipe.config.sample.guidance_scale)
        out = runner.run(self.diffusion.make_generator(0, self.device))
        sync(self.device)
        return out


def alternate(
    calls: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True
) -> dict[str, list[float]]:
    """Seconds per call of each, after one warm-up call each (``warmup``: the caller may have made
    them), the order alternating every round."""
    if warmup:
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


Timings = dict[str, dict[str, list[float]]]
"""Per revision (or setting), per figure, the seconds of each timed call."""


def time_figures(revisions: dict[str, Revision], repeats: int, batch: int) -> Timings:
    """Seconds per call of each revision (or setting), alternating: ``generate()`` (``repeats``
    calls), the runner at DDPM 50, batch 1 (a third as many), and a batch of ``batch`` at DDPM 20
    (a fifth as many); each figure's medians printed as it is done."""
    figures = {
        "generate_ms": (lambda rev: rev.generate, repeats),
        "runner_ddpm50_ms": (lambda rev: lambda: rev.run_steps(1, 50), max(3, repeats // 3)),
        f"batch{batch}_ddpm20_ms": (lambda rev: lambda: rev.run_steps(batch, 20), max(3, repeats // 5)),
    }
    timings: Timings = {name: {} for name in revisions}
    for key, (make, count) in figures.items():
        times = alternate({name: make(rev) for name, rev in revisions.items()}, count)
        for name in revisions:
            timings[name][key] = times[name]
        medians = {name: round(1000 * statistics.median(t), 1) for name, t in times.items()}
        print(f"{key}: median ms {medians}", flush=True)
    return timings


def summarise(timings: Timings, batch: int) -> dict[str, dict[str, Any]]:
    """Each figure's median in ms, a batch's as samples per second."""
    summary: dict[str, dict[str, Any]] = {}
    for name, figures in timings.items():
        summary[name] = {}
        for key, times in figures.items():
            if key.startswith("batch"):  # a batch's time, reported as throughput
                throughput = batch / statistics.median(times)
                summary[name][key.replace("_ms", "_samples_per_s")] = round(throughput, 2)
            else:
                summary[name][key] = round(1000 * statistics.median(times), 1)
    return summary


def write_comparison(
    args: argparse.Namespace,
    labels: dict[str, str],
    features: dict[str, torch.Tensor],
    timings: Timings,
    summary: dict[str, dict[str, Any]],
    header: dict[str, Any],
    started: float,
) -> None:
    """Writes ``args.out`` and prints the comparison of two revisions or settings: ``labels`` maps
    each one's key to its printed name, the reference first; the ratios are second over first, the
    feature difference that of ``generate()`` for seed 0."""
    first, second = labels
    ratios = {
        key: round(summary[second][key] / summary[first][key], 3)
        for key in summary[first]
        if key != "ops_per_guided_step"
    }
    difference = float((features[second] - features[first]).abs().max())
    scale = float(features[first].abs().max())
    result = {
        **header,
        "machine": {
            "platform": platform.platform(),
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "frames": args.frames,
        "summary": summary,
        f"{second}_over_{first}": ratios,
        "generate_features_max_abs_difference": difference,
        "generate_features_max_abs": scale,
        "times_ms": {
            name: {key: [round(1000 * t, 1) for t in times] for key, times in figures.items()}
            for name, figures in timings.items()
        },
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(ROOT / args.out, result)
    for name, label in labels.items():
        print(f"{label}: {summary[name]}")
    print(f"{labels[second]} / {labels[first]}: {ratios}")
    print(
        f"generate() features, seed 0: max |{second} - {first}| = {difference:.3g} "
        f"(max |{first}| {scale:.3g})"
    )
    print(f"written to {args.out}")


def add_timing_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The options of the timed comparison, shared with bench/ab_settings.py; ``out``: the default
    result file."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--text-encoder", help="the text encoder's folder (default: the package's)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default=out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="the git revision to compare the working tree with")
    parser.add_argument("--base-tree", help="a folder written by --export-base (instead of --base)")
    parser.add_argument("--export-base", metavar="DIR", help="write --base's package to DIR and stop")
    add_timing_arguments(parser, "bench/results/ab-sampling-cpu.json")
    args = parser.parse_args()
    if args.export_base:
        if not args.base:
            parser.error("--export-base needs --base")
        extract_package(args.base, Path(args.export_base))
        print(f"{args.base}'s package written to {args.export_base}/{BASE_PACKAGE}")
        return 0
    if bool(args.base) == bool(args.base_tree):
        parser.error("give one of --base and --base-tree")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.base_tree:
            tree = Path(args.base_tree).resolve()
            args.base = (tree / "REVISION").read_text().strip()
        else:
            tree = Path(tmp)
            extract_package(args.base, tree)
        sys.path.insert(0, str(tree))
        import mofusion
        from mofusion.checkpoint import default_checkpoint

        checkpoint = default_checkpoint()  # both revisions read the same files
        revisions = {
            "base": Revision(importlib.import_module(BASE_PACKAGE), args, checkpoint),
            "head": Revision(mofusion, args, checkpoint),
        }
        if Path(mofusion.__file__).parent != ROOT / "src" / "mofusion":
            raise RuntimeError(f"mofusion is imported from {mofusion.__file__}, not this working tree")
        ops = {
            name: {"float32": rev.ops_per_step(False), "bf16": rev.ops_per_step(True)}
            for name, rev in revisions.items()
        }
        print(f"ATen operations per guided step: {ops}", flush=True)
        features = {name: rev.generate() for name, rev in revisions.items()}
        timings = time_figures(revisions, args.repeats, args.batch)
    summary = summarise(timings, args.batch)
    for name in revisions:
        summary[name] = {"ops_per_guided_step": ops[name], **summary[name]}
    try:  # a GPU machine's copy of the tree has no git history
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    header = {
        "what": "the working tree against --base in one process, timed calls alternating",
        "base": args.base,
        "head": (commit or "the copied tree") + " + working tree",
    }
    write_comparison(args, {"base": "base", "head": "head"}, features, timings, summary, header, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
