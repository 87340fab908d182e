"""What the editing benches (``bench/edit_*.py``) share: their common options, the checkpoints and
validation windows they load, and how they save a result.

The benches choose settings on the *validation* split, so that the test split stays for
``mofusion evaluate inbetween``; every one of them draws the same windows for the same options.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mofusion._io import atomic_write_text
from mofusion.data import MotionDataset
from mofusion.evaluation import _comparable_models, benchmark_windows
from mofusion.motion import Motion
from mofusion.pipeline import MotionPipeline
from mofusion.representation import MotionRepresentation


def validation_parser(
    doc: str, max_windows: int = 120, several: bool = True, out: Path | None = None
) -> argparse.ArgumentParser:
    """``-c/--checkpoint`` (repeatable when ``several``), ``--data``, ``--max-windows``, ``--steps``
    (DDPM steps; default each model's ``sample.steps``), ``--last-step`` (default each model's
    ``sample.last_step``), ``--cache`` and ``--out`` (default ``out``); the description is the first
    paragraph of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "-c", "--checkpoint", required=True, type=Path, action="append" if several else "store"
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--max-windows", type=int, default=max_windows)
    parser.add_argument(
        "--steps", type=int, default=None, help="DDPM steps (default: each model's sample.steps)"
    )
    parser.add_argument(
        "--last-step",
        type=int,
        default=None,
        help="the noise step sampling stops at (default: each model's sample.last_step)",
    )
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=out)
    return parser


def load_validation(
    args: argparse.Namespace, length: int = 65, offset: int = 40
) -> tuple[list[MotionPipeline], MotionDataset, MotionRepresentation, list[Motion]]:
    """The checkpoints (on the CPU; they must share a data set and feature layout), the data set,
    its representation and its validation windows of ``length`` frames every ``offset``; with
    ``--last-step``, every model stops sampling there."""
    checkpoints = args.checkpoint if isinstance(args.checkpoint, list) else [args.checkpoint]
    pipes, dataset, rep = _comparable_models(checkpoints, args.data, "cpu", args.cache)
    if args.last_step is not None:
        for pipe in pipes:
            pipe.config.sample.last_step = args.last_step
    windows = benchmark_windows(dataset, rep, "val", args.max_windows, 0, length, offset)
    return pipes, dataset, rep, windows


def sampling_steps(args: argparse.Namespace, pipe: MotionPipeline) -> int:
    """The DDPM steps a bench samples ``pipe`` with: ``--steps``, else the model's ``sample.steps``
    (what ``MotionPipeline.edit`` does with ``steps=args.steps``)."""
    return args.steps or pipe.config.sample.steps


def save_result(path: Path | None, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON (atomically) and say where, unless ``path`` is None."""
    if path is not None:
        atomic_write_text(path, json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}")
