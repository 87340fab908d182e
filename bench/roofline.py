"""How large a share of a GPU's bf16 peak a denoiser can reach at most: a roofline bound per
sampling step, from the FLOPs and bytes of every operation the step runs (traced here, on a CPU).

Why: bench/sample.py measures the share on a GPU (ours 6.8 % with a CUDA graph, 13.9 % compiled, on
an H200; the MDM-sized transformer 28.8 % and 43.9 %). This says how much of the gap any kernel
tuning could close and how much is the shape of the network: an operation cannot run faster than
its FLOPs at the matrix peak nor than its bytes at the memory bandwidth, whichever is slower.

What it does: runs one guided DDPM step of each model (the library's StepRunner with its step and
condition tables, bf16 autocast, random condition tokens of the prompt's shape) under a dispatch
mode that records every ATen operation that is not a view: its FLOPs (torch.utils.flop_counter's
formulas) and the bytes it reads and writes. It traces batch 1 and batch 2, fits every figure as
``a + b * batch`` (the same operations run at every batch) and evaluates the fit at ``--batch``.
Two bounds on the time of one step:

- each operation alone: every operation is its own kernel and runs at its roofline (eager, or a
  CUDA graph of the eager step);
- ideal fusion: only the matrix operations (convolutions, matrix products, attention) move
  memory, each reading its inputs and writing its output once; a normalisation adds one read of
  its input (its statistics must be known before it normalises); every other operation (casts,
  activations, additions, the sampler's update) is fused away for free. No compiler does better.

The share of peak is the step's matrix FLOPs over (peak x the bound's time), as bench/sample.py
counts it. Inputs are the peak (default: the H200's measured 744 TFLOP/s, bench/results/
sample-cuda-h200-wide-throughput.json) and the memory bandwidth (default: the H200's datasheet
4.8 TB/s; the H100 SXM's is 3.35). It also counts the operations (kernels of an eager step) at
batch 1. These are bounds computed from shapes, not timings.

The trace runs under the CPU's bf16 autocast, which keeps normalisations in bf16. CUDA's autocast
runs them in float32, and the elementwise operations after them up to the next convolution too, so
an eager step on a GPU moves more bytes than counted here: its each-operation-alone bound is
optimistic. The ideal-fusion bound does not change (fused, those casts cost nothing).

Usage: python bench/roofline.py [--batch 1024] [--peak-tflops 744] [--bandwidth-tbs 4.8]
       [--variant 192,384,768 ...] [--out bench/results/roofline-h200.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).parent))

from mdm_reference import MDMReference  # noqa: E402

from mofusion._io import atomic_write_json  # noqa: E402
from mofusion.checkpoint import default_checkpoint  # noqa: E402
from mofusion.config import DenoiserConfig  # noqa: E402
from mofusion.denoiser import MotionUNet1D  # noqa: E402
from mofusion.fast import StepRunner  # noqa: E402
from mofusion.pipeline import MotionPipeline  # noqa: E402

PROMPT_TOKENS = 12
"""The packaged text model reads bench/sample.py's prompt as 12 tokens."""
GUIDANCE = 2.5
FEATURES = 257

NORMS = {"aten.native_group_norm", "aten.native_layer_norm"}
# the CPU's attention kernel, which flop_counter has no formula for: the same cost as the GPU's
CPU_ATTENTION = "aten._scaled_dot_product_flash_attention_for_cpu"


def category(name: str) -> str:
    """The group an ATen operation (``aten.x`` or the profiler's ``aten::x``) is counted in, so a
    profile and a bound can be compared group by group."""
    base = name.replace("::", ".").removeprefix("aten.")
    if "conv" in base:
        return "convolution"
    if "attention" in base or base == "_softmax":  # the folded attention's softmax
        return "attention"
    if base in ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear"):
        return "matrix product"
    if "norm" in base:
        return "normalisation"
    if base in ("_to_copy", "copy_", "to", "contiguous", "clone"):
        return "cast or copy"
    return "elementwise, other"


@dataclass
class Op:
    """One ATen operation of a traced step."""

    name: str
    kind: str
    """``matrix``, ``norm`` or ``other``."""
    flops: float
    read: float
    """Bytes of its tensor inputs."""
    written: float
    """Bytes of its tensor outputs."""


def tensor_bytes(t: torch.Tensor) -> int:
    """What reading ``t`` moves at least: its elements, or its storage when it is a broadcast view."""
    logical = t.numel() * t.element_size()
    try:
        return min(logical, t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):
        return logical


class OpTrace(TorchDispatchMode):
    """Records every non-view ATen operation run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view:
            return out
        name = str(func.overloadpacket)
        packet = func.overloadpacket
        flops = 0.0
        kind = "other"
        if packet in flop_registry:
            flops = float(flop_registry[packet](*args, **kwargs, out_val=out))
            kind = "matrix"
        elif name == CPU_ATTENTION:
            flash = flop_registry[torch.ops.aten._scaled_dot_product_flash_attention]
            flops = float(flash(*args[:3], out_val=out))
            kind = "matrix"
        elif name in NORMS:
            kind = "norm"
        # an out= tensor is written, not read (the runner's last operations write into its buffers)
        read_kwargs = {k: v for k, v in kwargs.items() if k != "out"}
        inputs = [t for t in tree_leaves((args, read_kwargs)) if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.ops.append(
            Op(name, kind, flops, sum(map(tensor_bytes, inputs)), sum(map(tensor_bytes, outputs)))
        )
        return out


def step_runner(
    model: torch.nn.Module,
    pipe: MotionPipeline,
    batch: int,
    frames: int,
    device: torch.device | str = "cpu",
    bf16: bool = True,
    package: str = "mofusion",
    bf16_all: bool = False,
    fused: bool = False,
    channels_last: bool = False,
) -> StepRunner:
    """The library's runner of one guided DDPM step of ``model`` at ``batch`` (the step and
    condition tables built beforehand, as the library samples), on random condition tokens of the
    prompt's shape, set at a middle step. ``package``: whose sampler and runner (bench/ab_revisions.py
    imports an older revision beside the working tree's ``mofusion``)."""
    diffusion = importlib.import_module(f"{package}.diffusion")
    fast = importlib.import_module(f"{package}.fast")
    clip = pipe.normalizer.bound if pipe.config.sample.clip_x0 else None
    schedule = diffusion.NoiseSchedule(pipe.config.diffusion, device)  # the runner works on its device
    sampler = diffusion.make_sampler(schedule, "ddpm", 50, 0.0, clip)
    generator = torch.Generator().manual_seed(0)
    cond = 0.5 * torch.randn(batch, PROMPT_TOKENS, pipe.config.denoiser.cond_dim, generator=generator)
    mask = torch.ones(batch, PROMPT_TOKENS, dtype=torch.bool)
    shape = (batch, FEATURES, frames)
    # bf16_all, fused and channels_last only when asked: an older revision's Acceleration
    # (ab_revisions.py) may not have them
    acceleration = fast.Acceleration(bf16=True, bf16_all=True) if bf16_all else fast.Acceleration(bf16=bf16)
    if fused:
        acceleration = dataclasses.replace(acceleration, fused_norm=True)
    if channels_last:
        acceleration = dataclasses.replace(acceleration, channels_last=True)
    runner = fast.StepRunner(model, sampler, shape, cond.to(device), mask.to(device), GUIDANCE, acceleration)
    runner.x.copy_(torch.randn(shape, generator=generator))
    runner.step_index.fill_(25)
    return runner


def trace_step(
    model: torch.nn.Module,
    pipe: MotionPipeline,
    batch: int,
    frames: int,
    bf16: bool = True,
    package: str = "mofusion",
) -> list[Op]:
    """The operations of one guided step of ``model`` at ``batch``, on the CPU (see
    :func:`step_runner`)."""
    runner = step_runner(model, pipe, batch, frames, "cpu", bf16, package)
    trace = OpTrace()
    with torch.no_grad(), trace:
        runner._run_step()
    return trace.ops


def at_batch(one: list[Op], two: list[Op], batch: int) -> list[Op]:
    """Each operation's figures at ``batch``, from traces at batch 1 and 2 (linear in the batch)."""
    if [o.name for o in one] != [o.name for o in two]:
        raise RuntimeError("the traced steps at batch 1 and 2 run different operations")

    def fit(a: float, b: float) -> float:
        return a + (b - a) * (batch - 1)

    return [
        Op(a.name, a.kind, fit(a.flops, b.flops), fit(a.read, b.read), fit(a.written, b.written))
        for a, b in zip(one, two, strict=True)
    ]


def alone_s(op: Op, peak: float, bandwidth: float) -> float:
    """The least time ``op`` takes as a kernel of its own: its FLOPs at the peak or its bytes at the
    bandwidth, whichever is longer."""
    return max(op.flops / peak, (op.read + op.written) / bandwidth)


def bounds(ops: list[Op], peak: float, bandwidth: float) -> dict[str, float]:
    """Matrix FLOPs of the step and the two lower bounds on its time (seconds)."""
    matrix = [o for o in ops if o.kind == "matrix"]
    flops = sum(o.flops for o in matrix)
    alone = sum(alone_s(o, peak, bandwidth) for o in ops)
    fused = sum(alone_s(o, peak, bandwidth) for o in matrix)
    fused += sum(o.read / bandwidth for o in ops if o.kind == "norm")
    return {"matrix_flops": flops, "each_op_alone_s": alone, "ideal_fusion_s": fused}


def summarize(name: str, params: int, one: list[Op], two: list[Op], args: argparse.Namespace) -> dict:
    peak, bandwidth = args.peak_tflops * 1e12, args.bandwidth_tbs * 1e12
    ops = at_batch(one, two, args.batch)
    b = bounds(ops, peak, bandwidth)
    matrix = [o for o in ops if o.kind == "matrix"]
    matrix_bytes = sum(o.read + o.written for o in matrix)
    all_bytes = sum(o.read + o.written for o in ops)
    return {
        "model": name,
        "params_M": round(params / 1e6, 2),
        "ops_per_step": len(one),
        "matrix_ops_per_step": sum(o.kind == "matrix" for o in one),
        "norm_ops_per_step": sum(o.kind == "norm" for o in one),
        "batch": args.batch,
        "matrix_gflop_per_step": round(b["matrix_flops"] / 1e9, 1),
        "gbytes_per_step_each_op_alone": round(all_bytes / 1e9, 2),
        "gbytes_per_step_matrix_ops": round(matrix_bytes / 1e9, 2),
        "matrix_flop_per_byte": round(b["matrix_flops"] / matrix_bytes, 1),
        "ms_per_step_each_op_alone": round(1e3 * b["each_op_alone_s"], 3),
        "ms_per_step_ideal_fusion": round(1e3 * b["ideal_fusion_s"], 3),
        "max_share_each_op_alone": round(b["matrix_flops"] / (peak * b["each_op_alone_s"]), 3),
        "max_share_ideal_fusion": round(b["matrix_flops"] / (peak * b["ideal_fusion_s"]), 3),
        "max_samples_per_s_at_50_steps_ideal_fusion": round(args.batch / (50 * b["ideal_fusion_s"]), 1),
        "ms_per_step_each_op_alone_by_category": by_category(ops, peak, bandwidth),
    }


def by_category(ops: list[Op], peak: float, bandwidth: float) -> dict[str, float]:
    """The each-operation-alone bound split by :func:`category` (ms per step)."""
    out: dict[str, float] = {}
    for o in ops:
        group = category(o.name)
        out[group] = out.get(group, 0.0) + 1e3 * alone_s(o, peak, bandwidth)
    return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=300, help="a 10-s motion at 30 fps")
    parser.add_argument("--peak-tflops", type=float, default=744.0)
    parser.add_argument("--bandwidth-tbs", type=float, default=4.8)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="also the packaged recipe at these channel widths, e.g. 192,384,768 (random weights)",
    )
    parser.add_argument("--out", default="bench/results/roofline-h200.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    pipe = MotionPipeline.from_checkpoint(default_checkpoint(), "cpu", "none")
    packaged = pipe.config.denoiser
    models: dict[str, torch.nn.Module] = {
        f"mofusion default (packaged, {'/'.join(map(str, packaged.channels))})": pipe.model.float(),
        "MDM-sized transformer": MDMReference(FEATURES).eval(),
        "U-Net 128/256/512 (issue's plan)": MotionUNet1D(
            DenoiserConfig(feature_dim=FEATURES, channels=[128, 256, 512], blocks_per_stage=2, time_dim=512)
        ).eval(),
    }
    for text in args.variant:
        channels = [int(c) for c in text.split(",")]
        cfg = DenoiserConfig(**{**asdict(packaged), "channels": channels})
        models[f"packaged recipe at {'/'.join(map(str, channels))}"] = MotionUNet1D(cfg).eval()
    rows = []
    for name, model in models.items():
        one = trace_step(model, pipe, 1, args.frames)
        two = trace_step(model, pipe, 2, args.frames)
        params = sum(p.numel() for p in model.parameters())
        row = summarize(name, params, one, two, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "what": "roofline bounds per guided DDPM step, traced on a CPU (not timings)",
        "peak_tflops": args.peak_tflops,
        "bandwidth_tbs": args.bandwidth_tbs,
        "frames": args.frames,
        "guidance": GUIDANCE,
        "torch": torch.__version__,
        "rows": rows,
    }
    out = Path(args.out)
    atomic_write_json(out, result)
    print(f"\n{'model':44}{'ops':>6}{'GFLOP':>9}{'FLOP/B':>8}{'alone':>8}{'fused':>8}  (max share of peak)")
    for r in rows:
        print(
            f"{r['model']:44}{r['ops_per_step']:>6}{r['matrix_gflop_per_step']:>9}{r['matrix_flop_per_byte']:>8}"
            f"{r['max_share_each_op_alone']:>8.1%}{r['max_share_ideal_fusion']:>8.1%}"
        )
    machine = f"peak {args.peak_tflops} TFLOP/s, {args.bandwidth_tbs} TB/s"
    print(f"batch {args.batch} (x2 for guidance), {machine}; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
