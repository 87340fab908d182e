"""One training step of the packaged recipe with its convolutions channels-last against channels
first, timed alternately in one process (forward, loss and backward on random data of the recipe's
batch and window).

Why: channels-last convolutions pay in the sampling step (docs/performance.md, "Channels-last
convolutions"); this asks whether swapping the convolutions of a training model pays too. Only the
convolutions are swapped (each ``nn.Conv1d`` runs as a channels-last 2-D convolution of the same
parameters, so checkpoints would not change); the training path's norms, upsampling and joins keep
their own layouts.

Usage: python bench/train_layout.py [--threads 2] [--repeats 8]
       [--out bench/results/train-channels-last-cpu.json]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from mofusion._io import atomic_write_json
from mofusion.checkpoint import default_checkpoint, load_checkpoint
from mofusion.denoiser import MotionUNet1D, channels_last_kernel


class SwappedConv1d(nn.Conv1d):
    """An ``nn.Conv1d`` (same parameters, same checkpoint) run as a channels-last 2-D convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = channels_last_kernel(self.weight)  # a copy per call: the checkpoint keeps its 1-D form
        out = F.conv2d(x.unsqueeze(2), weight, self.bias, (1, self.stride[0]), (0, int(self.padding[0])))
        return out.squeeze(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--out", default="bench/results/train-channels-last-cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_checkpoint(default_checkpoint()).config
    batch, window = config.train.batch_size, config.data.window
    torch.manual_seed(0)
    first = MotionUNet1D(config.denoiser).train()
    last = copy.deepcopy(first)
    for module in last.modules():
        if type(module) is nn.Conv1d:
            module.__class__ = SwappedConv1d
    generator = torch.Generator().manual_seed(0)
    dim, cond_dim = config.denoiser.feature_dim, config.denoiser.cond_dim
    x = torch.randn(batch, dim, window, generator=generator)
    t = torch.randint(0, config.diffusion.num_steps, (batch,), generator=generator)
    cond = torch.randn(batch, 12, cond_dim, generator=generator)
    target = torch.randn(batch, dim, window, generator=generator)

    def step(model: nn.Module) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout in both
        loss = F.mse_loss(model(x, t, cond), target)
        loss.backward()
        return loss.detach()

    losses = [float(step(model)) for model in (first, last)]
    gradient_difference = max(
        float((a.grad - b.grad).abs().max())
        for a, b in zip(first.parameters(), last.parameters(), strict=True)
        if a.grad is not None and b.grad is not None
    )
    times: dict[str, list[float]] = {"channels first": [], "channels-last convolutions": []}
    models = dict(zip(times, (first, last), strict=True))
    for round_ in range(args.repeats):
        for name in list(times) if round_ % 2 == 0 else list(times)[::-1]:
            start = time.perf_counter()
            step(models[name])
            times[name].append(time.perf_counter() - start)
    medians = {name: round(1000 * statistics.median(v), 1) for name, v in times.items()}
    result = {
        "what": "one training step (forward, loss, backward), timed alternately, median ms",
        "batch": batch,
        "window": window,
        "threads": args.threads,
        "torch": torch.__version__,
        "median_ms": medians,
        "ratio": round(medians["channels-last convolutions"] / medians["channels first"], 3),
        "losses": losses,
        "max_gradient_difference": gradient_difference,
        "times_ms": {name: [round(1000 * s, 1) for s in v] for name, v in times.items()},
    }
    atomic_write_json(args.out, result)
    print(medians, "ratio", result["ratio"], "losses", losses, "max gradient difference", gradient_difference)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
