"""bench/ik_fit.py's floor: how far predicted bones are from the skeleton's, in mm, by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import ik_fit  # noqa: E402

from mofusion.skeleton import Skeleton  # noqa: E402


def test_bone_mismatch_is_the_length_difference_per_bone_in_mm() -> None:
    # root -> a (1 m up) -> b (0.5 m along x); a frame whose first bone is 1.01 m and second 0.49 m
    skeleton = Skeleton(("root", "a", "b"), (-1, 0, 1), [[0, 0, 0], [0, 1, 0], [0.5, 0, 0]])
    positions = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 1.01, 0.0], [0.0, 1.01, 0.49]]], dtype=torch.float64)
    mismatch = ik_fit.bone_mismatch_mm(skeleton, positions)
    assert mismatch.shape == (1, 2)
    assert mismatch[0].tolist() == pytest.approx([10.0, 10.0])
    assert ik_fit.summary_mm(torch.tensor([1.0, 2.0, 3.0, 10.0])) == {"mean": 4.0, "p95": 8.9, "max": 10.0}
