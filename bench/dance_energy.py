"""How much the generated dances move, against the real dance of each test song: mean joint speed,
horizontal root speed and FACT's horizontal and vertical kinetic energy (averaged over joints).

Usage: python bench/dance_energy.py --checkpoint RUN --data ../shared/data/dance-with-melody
       [--seconds 30] [--steps N] [--cache DIR] [--out bench/results/dance-energy.json]

The first ``--seconds`` of every test dance and the same stretch of its song, danced as
``mofusion generate --music`` does. Explains the diversity and FID rows of ``evaluate dance``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mofusion.config import DataConfig
from mofusion.dance import generate_dance, song_frames
from mofusion.data.dataset import build_music_collection
from mofusion.metrics.dance import kinetic_features
from mofusion.pipeline import MotionPipeline
from mofusion.representation import MotionRepresentation


def _measures(positions: np.ndarray, fps: float) -> dict[str, float]:
    speed = np.linalg.norm(np.diff(positions, axis=0), axis=-1) * fps
    root = np.linalg.norm(np.diff(positions[:, 0, [0, 2]], axis=0), axis=-1) * fps
    kinetic = kinetic_features(positions, fps)
    return {
        "joint_speed": float(speed.mean()),
        "root_speed": float(root.mean()),
        "kinetic_horizontal": float(kinetic[0::3].mean()),
        "kinetic_vertical": float(kinetic[1::3].mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", default="bench/results/dance-energy.json")
    args = parser.parse_args()
    pipe = MotionPipeline.from_checkpoint(args.checkpoint, "auto")
    collection, split, _ = build_music_collection(DataConfig(path=args.data, fps=pipe.fps), None, args.cache)
    representation = MotionRepresentation(collection.spec)
    index = {n: i for i, n in enumerate(collection.names)}
    frames = int(round(args.seconds * pipe.fps))
    names, reals, songs = [], [], []
    for name in split["test"]:
        label = collection.labels[index[name]]
        features = torch.from_numpy(collection.clip(index[name])[:frames]).double()
        reals.append(representation.decode_positions(features).numpy())
        start = float(label["music_start_seconds"])
        songs.append(song_frames(pipe, label["audio"], start, None, args.cache)[: len(reals[-1])])
        names.append(name)
    results = generate_dance(pipe, songs, seed=0, steps=args.steps)
    rows = []
    for name, real, result in zip(names, reals, results, strict=True):
        rows.append(
            {
                "dance": name,
                "real": _measures(real, pipe.fps),
                "ours": _measures(result.positions.numpy(), pipe.fps),
            }
        )
    keys = list(rows[0]["real"])
    summary = {who: {k: float(np.mean([r[who][k] for r in rows])) for k in keys} for who in ("real", "ours")}
    for who in ("real", "ours"):
        summary[who]["joint_speed_range"] = [
            float(min(r[who]["joint_speed"] for r in rows)),
            float(max(r[who]["joint_speed"] for r in rows)),
        ]
    print(f"{'dance':<12}" + "".join(f"{k + ' real/ours':>32}" for k in keys))
    for r in rows:
        print(f"{r['dance']:<12}" + "".join(f"{r['real'][k]:>20.3f} / {r['ours'][k]:<9.3f}" for k in keys))
    print("mean", json.dumps(summary))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": args.checkpoint, "seconds": args.seconds, "rows": rows,
                               "summary": summary}, indent=2) + "\n")  # fmt: skip
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
