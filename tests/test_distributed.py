"""Multi-process training (torchrun / accelerate, gloo on CPU): two processes of batch B take the same
steps as one process of batch 2B, only rank 0 writes, and a run resumed under DDP continues exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mofusion.cli import main
from mofusion.distributed import Distributed, setup

ARGS = ["--preset", "tiny", "--subset", "dataset-1", "--set", "denoiser.dropout=0",
        "--set", "train.log_every=2", "--set", "train.checkpoint_every=3", "-q"]  # fmt: skip


def test_a_single_process_needs_no_process_group() -> None:
    single = setup("cpu")
    assert single == Distributed() and single.is_main and not single.enabled
    values = {"loss": torch.tensor(2.0)}
    assert single.mean(values) is values and single.any(True) and not single.any(False)
    assert Distributed(world_size=4, rank=2).shard(8) == slice(16, 24)


def _torchrun(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mofusion.cli", "train", *args]  # fmt: skip
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))


def test_two_processes_equal_one_with_the_doubled_batch(
    bandai_root: Path, session_cache: Path, tmp_path: Path
) -> None:
    data = ["--data", str(bandai_root), "--cache", str(session_cache)]
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    _torchrun([*ARGS, *data, "--out", str(ddp), "--max-steps", "6", "--set", "train.batch_size=4"], tmp_path)
    code = main(
        ["train", *ARGS, *data, "--out", str(single), "--max-steps", "6", "--set", "train.batch_size=8"]
    )
    assert code == 0
    # rank 0 alone wrote the log (one line per log step, not two) and the checkpoints
    assert len(_losses(ddp)) == 3
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir() if p.is_dir()) == [
        "step-00000003",
        "step-00000006",
    ]
    assert _losses(ddp) == pytest.approx(_losses(single), rel=1e-5)
    a, b = _weights(ddp, 6), _weights(single, 6)
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-5

    # resumed under DDP for 4 more steps = the single process trained on to step 10
    _torchrun([*ARGS, *data, "--out", str(ddp), "--resume", str(ddp), "--max-steps", "10",
               "--set", "train.batch_size=4"], tmp_path)  # fmt: skip
    code = main(["train", *ARGS, *data, "--out", str(single), "--resume", str(single), "--max-steps", "10",
                 "--set", "train.batch_size=8"])  # fmt: skip
    assert code == 0
    assert _losses(ddp) == pytest.approx(_losses(single), rel=1e-5)
    a, b = _weights(ddp, 10), _weights(single, 10)
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-5


def test_close_lets_the_wrapper_go_before_it_destroys_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate's reference to the DDP wrapper (whose reducer holds the group) is dropped before
    the group is destroyed: destroyed the other way round, a rank could abort at exit
    (bench/ddp_teardown.py)."""
    calls: list[str] = []

    class Accelerator:
        def free_memory(self) -> None:
            calls.append("free_memory")

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: calls.append("destroy"))
    Distributed(world_size=2, rank=1, accelerator=Accelerator()).close()
    assert calls == ["free_memory", "destroy"]
    calls.clear()
    Distributed().close()  # a single process has no group to leave
    assert calls == []
