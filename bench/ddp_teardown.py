"""How often a 2-process gloo job aborts at its end, by how it leaves the process group.

Why: a DDP test failed once in a fresh clone: rank 1 of `mofusion train` under torchrun had trained,
then died with SIGABRT ("terminate called without an active exception"). The process group had
been destroyed while the DDP wrapper, whose reducer holds the group, was still alive (accelerate
keeps a reference too), so the group's gloo threads were torn down later, when the wrapper went.
:meth:`mofusion.distributed.Distributed.close` now lets both references go first; this measures
whether that is what stops the abort. This launches a small
DDP job (six optimiser steps of a 2-layer model, then one all-reduce each step) many times, each way,
alternating the two so that both see the same load:

- ``old``: ``torch.distributed.destroy_process_group()`` with the wrapper alive (what `mofusion train`
  did before 2026-11-28);
- ``new``: ``Distributed.close()`` after the caller drops its wrapper.

``--load`` runs a busy process beside them: the abort depends on timing, and a contended CPU makes
it frequent enough to count. On 2 cores with
``--runs 40 --load``: old 9 of 40 aborted, new 0 of 40 (bench/results/ddp-teardown-cpu.json).

Usage: python bench/ddp_teardown.py [--runs 40] [--load] [--out bench/results/ddp-teardown-cpu.json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch


def worker(mode: str) -> None:
    """One rank of the job (run by torchrun with ``--worker MODE``)."""
    from mofusion.distributed import setup

    dist = setup("cpu")
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 8))
    wrapped = dist.wrap(model)
    optimiser = torch.optim.AdamW(wrapped.parameters())
    for _ in range(6):
        wrapped(torch.randn(16, 64)).square().mean().backward()
        optimiser.step()
        optimiser.zero_grad()
        dist.mean({"loss": torch.tensor(1.0)})
    dist.barrier()
    if mode == "old":
        torch.distributed.destroy_process_group()
    else:
        del wrapped, optimiser
        dist.close()


def launch(mode: str, env: dict[str, str]) -> tuple[bool, str]:
    """One torchrun job of two processes: whether it ended cleanly, and its stderr."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               __file__, "--worker", mode]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode == 0, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="Jobs of each kind.")
    parser.add_argument("--load", action="store_true", help="A busy process beside the jobs.")
    parser.add_argument("--out", default="bench/results/ddp-teardown-cpu.json")
    parser.add_argument("--worker", choices=("old", "new"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return 0
    from mofusion._io import atomic_write_json

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root / "src")}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.load else None
    counts = {"old": [0, 0], "new": [0, 0]}  # [aborted, runs]
    messages: dict[str, list[str]] = {"old": [], "new": []}
    started = time.perf_counter()
    try:
        for run in range(args.runs):
            for mode in ("old", "new") if run % 2 == 0 else ("new", "old"):
                clean, stderr = launch(mode, env)
                counts[mode][1] += 1
                if not clean:
                    counts[mode][0] += 1
                    lines = [s for s in stderr.splitlines() if "terminate" in s or "exitcode" in s]
                    messages[mode].append(lines[0] if lines else stderr[-200:])
            aborted = ", ".join(f"{m} {a} aborted" for m, (a, _) in counts.items())
            print(f"run {run + 1}/{args.runs}: {aborted}", flush=True)
    finally:
        if busy is not None:
            busy.kill()
    table = {
        "what": "2-process gloo DDP jobs (torchrun --standalone) that ended with a non-zero status",
        "load": "one busy process beside the jobs" if args.load else "none",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": {
            m: {"aborted": a, "runs": n, "first_messages": messages[m][:3]} for m, (a, n) in counts.items()
        },
    }
    for mode, (aborted, runs) in counts.items():
        print(f"{mode}: {aborted} of {runs} jobs aborted")
    atomic_write_json(args.out, table)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
