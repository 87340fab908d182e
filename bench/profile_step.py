"""Where a sampling step's time goes on this machine, against the roofline bound of each part.

Why: bench/roofline.py bounds a step's time from its FLOPs and bytes. On an H200 the packaged
model's bf16 CUDA-graph step measured about 4 x its bound and the MDM-sized transformer's about
2 x. This finds which operations take the difference, and times the packaged model's
convolutions as they run (1D, channels first) against the same convolutions as 2D channels-last
ones, the layout tensor-core kernels read without a transpose.

What it does, per model: builds the library's StepRunner (bf16 autocast unless --float32, guided,
random condition tokens of the prompt's shape), runs --warmup steps, then profiles --steps steps
with torch.profiler and sums each ATen operation's own device time (CPU time on a CPU) into the
groups of bench/roofline.py, beside that group's bound at the same batch. A CUDA graph replays
the kernels of this eager step, so the graph's step time splits the same way.
Then, for every distinct convolution of the packaged model at the profiled batch (x2 for
guidance): the median time as conv1d on (B, C, T) and as conv2d on (B, C, 1, T) in
channels_last, and the FLOP rate of each. And for every distinct group norm: its kernels and
device time per call as ``F.group_norm`` (CUDA: statistics, fused parameters, then the normalised
output, three kernels) against the same normalisation as ``F.layer_norm`` over each group's
values (statistics and output in one kernel) followed by the per-channel affine, which could
also carry a ResBlock's step scale and shift (see ``ResBlock1D.film``).

Usage: python bench/profile_step.py [--device cuda] [--batch 1024] [--steps 5]
       [--out bench/results/profile-step-cuda.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))

from mdm_reference import MDMReference  # noqa: E402
from roofline import FEATURES, PROMPT_TOKENS, at_batch, by_category, category, step_runner, trace_step  # noqa: E402
from sample import matmul_peak, sync, timed  # noqa: E402

from mofusion._io import atomic_write_json  # noqa: E402
from mofusion.checkpoint import default_checkpoint  # noqa: E402
from mofusion.fast import StepRunner  # noqa: E402
from mofusion.kernels import fused_available, group_norm_act  # noqa: E402
from mofusion.pipeline import MotionPipeline  # noqa: E402

# datasheet figures for the bound where this machine's own are not given
BANDWIDTH_TBS = {"H200": 4.8, "H100": 3.35}


def profile_steps(runner: StepRunner, device: torch.device, warmup: int, steps: int) -> dict[str, Any]:
    """Per-group own device time (ms per step) of ``steps`` profiled steps, and their wall time."""
    with torch.no_grad():
        for _ in range(warmup):
            runner._run_step()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            runner._run_step()
        sync(device)
        wall = (time.perf_counter() - start) / steps
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(steps):
                runner._run_step()
            sync(device)
    groups: dict[str, float] = {}
    kernels = 0
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        own = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if own <= 0:
            continue
        kernels += event.count
        group = category(event.key)
        groups[group] = groups.get(group, 0.0) + own / 1e3 / steps
    total = sum(groups.values())
    device_events = None
    if device.type == "cuda":  # kernels, copies and fills the GPU ran: what a CUDA graph replays
        device_events = sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA) // steps
    return {
        "device_events_per_step": device_events,
        "wall_ms_per_step": round(1e3 * wall, 3),
        "profiled_ms_per_step": round(total, 3),
        "aten_ops_with_own_time_per_step": kernels // steps,
        "ms_per_step_by_category": {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
    }


def distinct_inputs(
    model: torch.nn.Module,
    kind: type[torch.nn.Module],
    key: Callable[[Any, Tensor], tuple],
    frames: int,
    device: torch.device,
) -> dict[tuple, Any]:
    """The modules of type ``kind`` that one plain forward pass of ``model`` (batch 1, ``frames``)
    calls, one per distinct ``key(module, input)``: the shapes a step runs them at."""
    shapes: dict[tuple, Any] = {}

    def hook(module: torch.nn.Module, inputs: tuple) -> None:
        shapes.setdefault(key(module, inputs[0]), module)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, kind)]
    cond = torch.zeros(1, PROMPT_TOKENS, model.config.cond_dim, device=device)
    try:
        with torch.no_grad():
            model(torch.zeros(1, FEATURES, frames, device=device), torch.tensor([500], device=device), cond)
    finally:
        for h in handles:
            h.remove()
    return shapes


def conv_layouts(
    model: torch.nn.Module, batch: int, frames: int, device: torch.device, dtype: torch.dtype, repeats: int
) -> list[dict[str, Any]]:
    """Each distinct Conv1d of ``model`` as it runs in a step (its input shape at ``batch``) timed
    as conv1d on (B, C, T) and as conv2d on channels-last (B, C, 1, T)."""
    shapes = distinct_inputs(
        model,
        torch.nn.Conv1d,
        lambda m, x: (x.shape[1], m.out_channels, m.kernel_size[0], m.stride[0], x.shape[2]),
        frames,
        device,
    )
    rows = []
    for (c_in, c_out, k, stride, length), module in shapes.items():
        weight = module.weight.detach().to(device, dtype)
        bias = module.bias.detach().to(device, dtype)
        padding = module.padding[0]
        x = torch.randn(batch, c_in, length, device=device, dtype=dtype)
        x2 = x[:, :, None, :].contiguous(memory_format=torch.channels_last)
        w2 = weight[:, :, None, :].contiguous(memory_format=torch.channels_last)

        calls = {
            "conv1d_ncl": partial(F.conv1d, x, weight, bias, stride, padding),
            "conv2d_channels_last": partial(F.conv2d, x2, w2, bias, (1, stride), (0, padding)),
        }
        with torch.no_grad():  # the two layouts compute the same convolution
            difference = (calls["conv1d_ncl"]() - calls["conv2d_channels_last"]()[:, :, 0]).abs().max()
        times = {name: statistics.median(timed(fn, device, repeats, warmup=3)) for name, fn in calls.items()}
        out_length = (length + 2 * padding - k) // stride + 1
        flops = 2 * batch * c_out * out_length * c_in * k
        rows.append(
            {
                "c_in": c_in, "c_out": c_out, "kernel": k, "stride": stride, "frames": length,
                **{f"{n}_ms": round(1e3 * t, 3) for n, t in times.items()},
                **{f"{n}_tflops": round(flops / t / 1e12, 1) for n, t in times.items()},
                "max_abs_difference": float(difference),
            }
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def per_call(fn: Any, device: torch.device, repeats: int) -> tuple[int | None, float]:
    """Kernels the GPU runs per call of ``fn`` (None on a CPU) and its own device time per call in
    ms (CPU time on a CPU): what a CUDA graph of it would replay."""
    with torch.no_grad():
        for _ in range(3):
            fn()
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(repeats):
                fn()
            sync(device)
    if device.type == "cuda":
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        return len(kernels) // repeats, sum(e.device_time for e in kernels) / 1e3 / repeats
    own = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("aten::"))
    return None, own / 1e3 / repeats


def _layer_form(x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """A group norm as a layer norm over each group's values, then the per-channel affine."""
    per_group = x.shape[1] // groups * x.shape[2]
    normed = F.layer_norm(x.view(x.shape[0], groups, per_group), (per_group,), eps=eps)
    return torch.addcmul(bias[:, None], normed.view_as(x), weight[:, None])


def norm_forms(
    model: torch.nn.Module, batch: int, frames: int, device: torch.device, dtype: torch.dtype, repeats: int
) -> list[dict[str, Any]]:
    """Each distinct GroupNorm of ``model`` at ``batch`` as ``F.group_norm`` and as ``F.layer_norm``
    over each group's values plus the per-channel affine (one multiply-add): kernels and device
    time per call, and their largest difference; then with the SiLU that follows most of them, as
    PyTorch runs it and fused (:func:`mofusion.kernels.group_norm_act`, where it runs)."""
    shapes = distinct_inputs(model, torch.nn.GroupNorm, lambda m, x: (x.shape[1], x.shape[2]), frames, device)
    rows = []
    for (channels, length), module in shapes.items():
        groups, eps = module.num_groups, module.eps
        x = torch.randn(batch, channels, length, device=device, dtype=dtype)
        weight = (1 + 0.1 * torch.randn(channels, device=device)).to(dtype)
        bias = (0.1 * torch.randn(channels, device=device)).to(dtype)

        calls = {
            "group_norm": partial(F.group_norm, x, groups, weight, bias, eps),
            "layer_norm_affine": partial(_layer_form, x, groups, weight, bias, eps),
            "group_norm_silu": partial(group_norm_act, x, groups, weight, bias, eps, True, fused=False),
        }
        if fused_available(x):
            calls["fused_group_norm_silu"] = partial(group_norm_act, x, groups, weight, bias, eps, True)
        with torch.no_grad():
            difference = (calls["group_norm"]() - calls["layer_norm_affine"]()).abs().max()
            fused_difference = (
                None
                if "fused_group_norm_silu" not in calls
                else float((calls["group_norm_silu"]() - calls["fused_group_norm_silu"]()).abs().max())
            )
        row: dict[str, Any] = {"channels": channels, "frames": length, "groups": groups}
        for name, fn in calls.items():
            kernels, ms = per_call(fn, device, repeats)
            row[f"{name}_kernels"], row[f"{name}_ms"] = kernels, round(ms, 4)
        row["max_abs_difference"] = float(difference)
        row["fused_max_abs_difference"] = fused_difference
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(result: dict[str, Any]) -> str:
    """Measured against bound, ms per step per group; the convolutions' totals in each layout."""
    lines = [f"{result['machine']}, batch {result['batch']} (x2 for guidance), {result['precision']}"]
    for label, row in result["models"].items():
        events = row["device_events_per_step"]
        lines.append(
            f"{label}: {row['wall_ms_per_step']} ms per step"
            + ("" if events is None else f", {events} kernels and copies per step")
        )
        bound = row["bound_ms_per_step_by_category"] or {}
        for group, ms in row["ms_per_step_by_category"].items():
            limit = bound.get(group)
            bound_text = "" if limit is None else f"   bound {limit:.3f} ms"
            lines.append(f"  {group:22}{ms:>10.3f} ms{bound_text}")
    convs = result["convolutions"]
    if convs:
        one_d = sum(c["conv1d_ncl_ms"] for c in convs)
        two_d = sum(c["conv2d_channels_last_ms"] for c in convs)
        lines.append(
            f"the {len(convs)} distinct convolutions once each: conv1d {one_d:.3f} ms, "
            f"conv2d channels-last {two_d:.3f} ms ({one_d / two_d:.2f} x)"
        )
    norms = result.get("normalisations") or []
    if norms:
        group = sum(n["group_norm_ms"] for n in norms)
        layer = sum(n["layer_norm_affine_ms"] for n in norms)
        kernels = [(n["group_norm_kernels"], n["layer_norm_affine_kernels"]) for n in norms]
        lines.append(
            f"the {len(norms)} distinct group norms once each: group_norm {group:.4f} ms, "
            f"layer_norm + affine {layer:.4f} ms ({group / layer:.2f} x); kernels per call {kernels[0]}"
        )
        if all(n.get("fused_group_norm_silu_ms") is not None for n in norms):
            plain = sum(n["group_norm_silu_ms"] for n in norms)
            fused = sum(n["fused_group_norm_silu_ms"] for n in norms)
            first = norms[0]
            lines.append(
                f"  with their SiLU: as PyTorch runs them {plain:.4f} ms ({first['group_norm_silu_kernels']} "
                f"kernels per call), fused {fused:.4f} ms ({first['fused_group_norm_silu_kernels']}): "
                f"{plain / fused:.2f} x"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--float32", action="store_true", help="no bf16 autocast")
    parser.add_argument(
        "--bf16-all", action="store_true", help="the step all in bf16, no autocast (Acceleration.bf16_all)"
    )
    parser.add_argument(
        "--fused", action="store_true", help="group norms and their SiLU fused (Acceleration.fused_norm)"
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="convolutions channels-last, activations (B, T, C) in memory (Acceleration.channels_last)",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="default: measured here (GPU)")
    parser.add_argument("--bandwidth-tbs", type=float, default=None, help="default: the datasheet's")
    parser.add_argument("--no-mdm", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    bf16 = not args.float32
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":  # measured as bench/sample.py measures it
        peak = matmul_peak(device) / 1e12
    bandwidth = args.bandwidth_tbs or next((v for k, v in BANDWIDTH_TBS.items() if k in name), None)
    pipe = MotionPipeline.from_checkpoint(default_checkpoint(), "cpu", "none")
    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {"mofusion default (packaged)": pipe.model.float()}
    if not args.no_mdm:
        models["MDM-sized transformer"] = MDMReference(FEATURES).eval()
    precision = "bf16 throughout (bf16-all)" if args.bf16_all else "bf16 autocast" if bf16 else "float32"
    if args.fused:
        precision += ", fused group norms"
    if args.channels_last:
        precision += ", channels-last"
    result: dict[str, Any] = {
        "machine": name, "torch": torch.__version__, "batch": args.batch, "frames": args.frames,
        "precision": precision, "peak_tflops": peak,
        "bandwidth_tbs": bandwidth, "models": {},
    }  # fmt: skip
    for label, model in models.items():
        bound = None
        if peak and bandwidth:
            one = trace_step(model, pipe, 1, args.frames)
            two = trace_step(model, pipe, 2, args.frames)
            bound = by_category(at_batch(one, two, args.batch), peak * 1e12, bandwidth * 1e12)
        model = model.to(device)
        # the MDM-sized reference has no sampling cache, which bf16-all needs: it stays on autocast
        whole = args.bf16_all and hasattr(model, "precompute")
        fused = args.fused and hasattr(model, "precompute")  # the reference has no group norms
        last = args.channels_last and hasattr(model, "precompute")  # nor convolutions
        runner = step_runner(model, pipe, args.batch, args.frames, device, bf16, bf16_all=whole, fused=fused,
                             channels_last=last)  # fmt: skip
        row = profile_steps(runner, device, args.warmup, args.steps)
        row["bound_ms_per_step_by_category"] = bound
        result["models"][label] = row
        print(json.dumps({"model": label, **row}), flush=True)
        del runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    dtype = torch.bfloat16 if bf16 else torch.float32
    result["convolutions"] = conv_layouts(
        models["mofusion default (packaged)"], 2 * args.batch, args.frames, device, dtype, 10
    )
    # autocast runs normalisations in float32; bf16-all runs them in bfloat16
    result["normalisations"] = norm_forms(
        models["mofusion default (packaged)"],
        2 * args.batch,
        args.frames,
        device,
        torch.bfloat16 if args.bf16_all else torch.float32,
        20,
    )
    print(table(result))
    out = Path(args.out or f"bench/results/profile-step-{device.type}.json")
    atomic_write_json(out, result)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
