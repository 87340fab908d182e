"""Which feature blocks an editing model gets wrong in a gap, on *validation* windows.

The in-betweening benchmark's protocol (10 context frames, a transition, one target frame; the same
120 windows as ``bench/edit_smoothing.py``), each checkpoint sampled once (DDPM, its own steps
unless ``--steps``) at its own temperature. For each block of the feature vector (root yaw and
ground velocity, root height, local positions, rotations, joint velocities, foot contacts): the
root-mean-square error of the generated features against the window's own, in units of the model's
normalisation, over the frames of the gap (pose channels) or the steps from the last context frame
to the last frame of the gap (step channels: velocities and contacts). Decoding does not enter (the
features are compared before positions are consolidated and rotations fitted). The first row is the
per-feature linear interpolation of the known values (``mofusion.editing.interpolate_known``: the
base an interpolation-residual model adds its sample to).

Usage: python bench/edit_feature_errors.py -c CKPT [-c CKPT ...] --data ../shared/data/bandai-namco
       [--transition 5] [--out FILE.json]
"""

from __future__ import annotations

import torch
from _validation import load_validation, save_result, validation_parser

from mofusion.editing import ChannelTable, EditRequest, feature_mask, interpolate_known
from mofusion.evaluation import N_PAST, benchmark_known


def main() -> int:
    parser = validation_parser(__doc__)
    parser.add_argument("--transition", type=int, default=5)
    args = parser.parse_args()
    pipes, _, rep, windows = load_validation(args)
    window = N_PAST + args.transition + 1
    clips = [m.slice(0, window) for m in windows]
    known = benchmark_known(window)
    # feature t holds frame t's pose and the step t -> t + 1: the last context frame's step leads
    # into the gap, the gap's last step leads to the target
    table = ChannelTable.of(rep.spec)
    judged = torch.zeros(window, rep.dim, dtype=torch.bool)
    judged[N_PAST : window - 1] = True
    judged[N_PAST - 1, table.step] = True
    frames = torch.from_numpy(known)[None]
    std = pipes[0].normalizer.std.cpu()  # errors in the units of the first checkpoint's normaliser

    def block_errors(features: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
        squared = ((features - true) / std).pow(2)
        out = {}
        for name, sl in rep.slices.items():
            mask = judged[:, sl].expand(squared.shape[0], -1, -1)
            out[name] = float(squared[..., sl][mask].mean().sqrt())
        return out

    def report(name: str, errors: dict[str, float]) -> None:
        rows.append({"row": name, **errors})
        print(name)
        for block, value in errors.items():
            print(f"  {block:<20} {value:.3f}")

    rows: list[dict[str, object]] = []
    true = torch.stack([pipes[0]._input_features(EditRequest(window, known, motion=m)) for m in clips])
    known_mask = feature_mask(table, frames.expand(len(clips), -1))
    base = interpolate_known(true.transpose(1, 2), known_mask.transpose(1, 2)).transpose(1, 2)
    report("interpolation of the known values", block_errors(base, true))
    for checkpoint, pipe in zip(args.checkpoint, pipes, strict=True):
        captured: dict[str, torch.Tensor] = {}
        to_motions = pipe.to_motions

        def keep_features(features, _to_motions=to_motions, _captured=captured, **kwargs):  # type: ignore[no-untyped-def]
            _captured["features"] = features.detach().clone()
            return _to_motions(features, **kwargs)

        pipe.to_motions = keep_features  # type: ignore[method-assign]
        requests = [EditRequest(window, known, motion=m) for m in clips]
        pipe.edit(requests, seed=0, sampler="ddpm", steps=args.steps)
        report(str(checkpoint), block_errors(captured["features"], true))
    save_result(
        args.out, {"split": "val", "windows": len(windows), "transition": args.transition, "rows": rows}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
