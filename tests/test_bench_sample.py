"""bench/sample.py's breakdown of a generate() call: its parts are measured inside the call and add
up to it, and the timers it puts in place are taken out again."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import sample  # noqa: E402

from mofusion.checkpoint import default_checkpoint  # noqa: E402
from mofusion.fast import StepRunner  # noqa: E402
from mofusion.pipeline import MotionPipeline  # noqa: E402


def test_library_phases_add_up_and_leave_nothing_patched() -> None:
    pipe = MotionPipeline.from_checkpoint(default_checkpoint(edit=True), "cpu")
    run, positions, condition = StepRunner.run, pipe.positions, pipe.text_condition
    calls = []

    def call() -> None:
        calls.append(1)
        pipe.generate(1, 40, seed=0)

    phases = sample.library_phases(pipe, call, torch.device("cpu"), repeats=2)
    assert len(calls) == 2
    assert set(phases) == {"encode prompt", "sampling loop", "positions", "total", "rest"}
    assert phases["encode prompt"] == 0.0  # this call encodes no prompt: timed as nothing, not skipped
    assert phases["sampling loop"] > 0 and phases["positions"] > 0 and phases["rest"] >= 0
    parts = phases["encode prompt"] + phases["sampling loop"] + phases["positions"] + phases["rest"]
    assert abs(parts - phases["total"]) < 0.01
    assert StepRunner.run is run and pipe.positions == positions and pipe.text_condition == condition
    assert "positions" not in vars(pipe) and "text_condition" not in vars(pipe)


def test_a_failing_row_is_recorded_and_passed_over() -> None:
    """An untried row that fails (the fused kernel's on a first GPU) leaves one line in ``skipped``
    and lets the rows after it run."""
    bench = object.__new__(sample.Bench)
    bench.result = {"skipped": []}
    ran = []

    def broken(label: str) -> None:
        raise RuntimeError(f"{label} could not compile\nand a long trace after it")

    bench.attempt("fused row", broken, "kernel")
    bench.attempt("next row", ran.append, "ran")
    assert bench.result["skipped"] == ["fused row: failed (RuntimeError: kernel could not compile)"]
    assert ran == ["ran"]
