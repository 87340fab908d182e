"""Training throughput (motion frames per second) of presets on this machine, and the time it
takes to train the packaged default model here.

Usage: python bench/train.py --data PACK_OR_FOLDER [--preset packaged bandai-text-small bandai-text]
       (music models: --data ../shared/data/dance-with-melody --preset dance-small dance)
       [--batch 64 256] [--steps 40] [--device auto] [--set section.field=value ...] [--out FILE]

Each preset runs at its own batch size (or each ``--batch``), with and without the kinematic
losses; the first 10 steps are warm-up and not timed. ``packaged`` is the recipe of the packaged default
(``src/mofusion/pretrained/bandai-text``) as its checkpoint records it (a preset with changed
widths): its row gives the time the steps it was trained for take on this machine, and so does any
other row that trains the same network at the same batch. Every row also gives the time the
preset's own ``max_steps`` take here.
Prints a table and writes bench/results/train-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from mofusion.audio import AudioFeatureConfig
from mofusion.checkpoint import default_checkpoint, load_checkpoint
from mofusion.config import preset_config
from mofusion.data.dataset import load_dataset
from mofusion.training import Trainer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument(
        "--preset",
        nargs="+",
        default=["packaged", "bandai-text-small", "bandai-text"],
        help="presets, or 'packaged': the packaged default's own training config",
    )
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="default: each preset's own")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shipped = load_checkpoint(default_checkpoint())
    rows = []
    dataset = None
    for preset in args.preset:
        recipe = shipped.config if preset == "packaged" else preset_config(preset)
        base = recipe.updated({"data": {"path": args.data}, "train": {"device": args.device}}, args.set)
        if dataset is None:
            music = AudioFeatureConfig.of(base) if base.condition.kind == "music" else None
            dataset = load_dataset(base.data, args.cache, progress=False, music=music)
        for batch in args.batch or [base.train.batch_size]:
            for kinematic in (True, False):
                cfg = base.updated(
                    {"train": {"batch_size": batch, "max_steps": 10**9}, "loss": {"kinematic": kinematic}}
                )
                trainer = Trainer(
                    cfg, "/tmp/mofusion-bench-run", dataset=dataset, progress=False, cache=args.cache
                )
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
                    "preset": preset,
                    "batch": batch,
                    "kinematic": kinematic,
                    "channels": list(trainer.config.denoiser.channels),
                    "params_M": round(trainer.model.num_parameters() / 1e6, 2),
                    "ms_per_step": round(1000 * elapsed / args.steps, 2),
                    "frames_per_s": round(args.steps * batch * cfg.data.window / elapsed),
                    "device": str(trainer.device),
                    "precision": "bf16 autocast" if trainer.use_bf16 else "fp32",
                }
                # the time the preset's own number of steps takes here
                row["preset_steps"] = base.train.max_steps
                row["preset_minutes"] = round(base.train.max_steps * elapsed / args.steps / 60, 1)
                own = shipped.config
                if (
                    trainer.config.denoiser == own.denoiser
                    and batch == own.train.batch_size
                    and kinematic == own.loss.kinematic
                ):
                    row["packaged_default_steps"] = shipped.step
                    row["packaged_default_minutes"] = round(shipped.step * elapsed / args.steps / 60, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    device = rows[0]["device"]
    name = torch.cuda.get_device_name() if "cuda" in device else platform.processor() or "cpu"
    result = {"machine": name, "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    out = Path(args.out or f"bench/results/train-{'cuda' if 'cuda' in device else 'cpu'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    head = ("preset", 18), ("batch", 6), ("kin", 5), ("params", 7), ("ms/step", 9), ("frames/s", 10)
    print(" ".join(f"{name:>{width}}" for name, width in head) + f" {'default min':>12}")
    for r in rows:
        kin, params = str(r["kinematic"]), f"{r['params_M']}M"
        default = str(r.get("packaged_default_minutes", ""))
        print(f"{r['preset']:>18} {r['batch']:>6} {kin:>5} {params:>7} {r['ms_per_step']:>9} "
              f"{r['frames_per_s']:>10} {default:>13}")  # fmt: skip
    print(f"machine: {name}; torch {torch.__version__}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
