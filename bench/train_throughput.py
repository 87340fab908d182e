"""Training throughput (motion frames per second) of presets on this machine.

Usage: python bench/train_throughput.py --data PACK_OR_FOLDER [--preset bandai] [--batch 64 128]
       [--steps 60] [--device auto] [--no-kinematic]

Prints a table and writes bench/results/train_throughput-<device>.json. The first 10 steps of each
configuration are warm-up and not timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from mofusion.config import preset_config
from mofusion.data.dataset import load_dataset
from mofusion.training import Trainer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="bandai")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    base = preset_config(args.preset).updated(
        {"data": {"path": args.data}, "train": {"device": args.device}}, args.set
    )
    dataset = load_dataset(base.data, args.cache, progress=False)
    rows = []
    for batch in args.batch:
        for kinematic in (True, False):
            cfg = base.updated(
                {"train": {"batch_size": batch, "max_steps": 10**9}, "loss": {"kinematic": kinematic}}
            )
            trainer = Trainer(cfg, "/tmp/mofusion-bench-run", dataset=dataset, progress=False)
            for _ in range(10):
                trainer.train_step()
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step()
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            row = {
                "preset": args.preset,
                "batch": batch,
                "kinematic": kinematic,
                "params_M": round(trainer.model.num_parameters() / 1e6, 2),
                "ms_per_step": round(1000 * elapsed / args.steps, 2),
                "frames_per_s": round(args.steps * batch * cfg.data.window / elapsed),
                "device": str(trainer.device),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available() and args.device != "cpu"
        else platform.processor() or "cpu"
    )
    result = {"machine": name, "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    out = Path(
        args.out or f"bench/results/train_throughput-{'cuda' if 'cuda' in rows[0]['device'] else 'cpu'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'batch':>6} {'kin':>5} {'params':>7} {'ms/step':>9} {'frames/s':>10}")
    for r in rows:
        kin, params = str(r["kinematic"]), f"{r['params_M']}M"
        print(f"{r['batch']:>6} {kin:>5} {params:>7} {r['ms_per_step']:>9} {r['frames_per_s']:>10}")
    print(f"machine: {name}; torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
