"""Sampling speed: latency at batch 1 and throughput at batch 1..1024 of 10-s motions, ours against
an MDM-sized transformer on the same sampler, inputs and machine, with FLOPs and the share of peak.

Usage:
    python bench/sample.py [--device cuda|cpu] [--threads 2] [--frames 300] [--steps 50]
                           [--batches 1 4 16 64 256 1024] [--budget-s 400] [--out FILE]
                           [--text-encoder PATH] [--random-condition] [--library-only]

Rows (all at ``--frames`` frames, 50 steps, guidance 2.5 as the packaged model samples, one prompt):

- latency (batch 1, end to end: the prompt encoded on the device, the sampling loop, the output
  copied back and denormalised) of the packaged default model under each speed-up alone and in
  combination: the eager loop (``mofusion`` before this benchmark), the step runner (condition
  built once), bf16 autocast, bf16 throughout, fused group norms, CUDA graph, torch.compile; then
  fewer steps (DDPM 20 and 10, DPM-SDE 10: DPM-Solver++(2M) in its SDE form);
  the MDM-sized transformer and the issue's planning U-Net (128/256/512) through the same runner;
- the library's ``generate()`` with its own settings for the device, with where its time goes
  (``phases_ms``: prompt, sampling loop, positions, the rest; timed apart, with synchronisations);
- throughput (samples per second, denoiser + sampler only) at each batch for ours and the MDM
  reference under the same settings;
- FLOPs of one denoiser call at batch 1 (torch.utils.flop_counter), and at each throughput point
  the achieved denoiser FLOP rate over the bf16 matrix peak measured in the same run.

``--library-only``: the library rows only, a quick check of ``generate()``'s defaults.

``--random-condition``: throughput rows only, with random condition tokens of the encoded prompt's
shape (12 tokens of 384: the same FLOPs), for a machine without the text encoder.

Prints a table and writes JSON (default bench/results/sample-<device>.json). Parts run in priority
order and the JSON is rewritten after each, so a run cut short by ``--budget-s`` keeps what it did.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))

from mdm_reference import MDMReference  # noqa: E402

from mofusion._io import atomic_write_json  # noqa: E402
from mofusion.checkpoint import default_checkpoint  # noqa: E402
from mofusion.config import DenoiserConfig  # noqa: E402
from mofusion.denoiser import MotionUNet1D  # noqa: E402
from mofusion.diffusion import guided, make_generator, make_sampler, sample_loop  # noqa: E402
from mofusion.errors import first_line  # noqa: E402
from mofusion.fast import Acceleration, StepRunner  # noqa: E402
from mofusion.pipeline import MotionPipeline  # noqa: E402

PROMPT = "a person walks happily"
PROMPT_TOKENS = 12
"""How many tokens the packaged text model reads PROMPT as (its cross-attention's key length)."""
GUIDANCE = 2.5


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def library_phases(
    pipe: MotionPipeline, call: Callable[[], None], device: torch.device, repeats: int
) -> dict[str, float]:
    """Where a ``generate()`` call's time goes (ms): the prompt encoded, the sampling loop, the
    positions decoded, and the rest (the sampler and runner looked up, the prompt copied into the
    runner, the copies back), of the call whose total is the median of ``repeats``, so the parts
    add up. Timed apart from the latency itself, with a device synchronisation at each boundary,
    so the total is a little more than an untimed call's."""
    names = ("encode prompt", "sampling loop", "positions")
    current = dict.fromkeys(names, 0.0)
    calls: list[dict[str, float]] = []
    run, positions, condition = StepRunner.run, pipe.positions, pipe.text_condition

    def timing(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            sync(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(device)
            current[name] += time.perf_counter() - start
            return out

        return wrapped

    StepRunner.run = timing("sampling loop", run)  # type: ignore[method-assign]
    pipe.positions = timing("positions", positions)  # type: ignore[method-assign]
    pipe.text_condition = timing("encode prompt", condition)  # type: ignore[method-assign]
    try:
        for _ in range(repeats):
            current.update(dict.fromkeys(names, 0.0))
            sync(device)
            start = time.perf_counter()
            call()
            sync(device)
            total = time.perf_counter() - start
            calls.append({**current, "rest": total - sum(current.values()), "total": total})
    finally:
        StepRunner.run = run  # type: ignore[method-assign]
        del pipe.positions, pipe.text_condition
    median = sorted(calls, key=lambda c: c["total"])[len(calls) // 2]
    return {name: round(1000 * value, 3) for name, value in median.items()}


def matmul_peak(device: torch.device) -> float | None:
    """bf16 matrix-product rate (FLOP/s) of an 8192^3 product on random data: the ceiling used for
    the share of peak (measured, not the datasheet's)."""
    if device.type != "cuda":
        return None
    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    times = timed(lambda: a @ b, device, repeats=10, warmup=3)
    return 2 * n**3 / statistics.median(times)


def forward_flops(model: torch.nn.Module, frames: int, device: torch.device) -> float:
    x = torch.randn(1, 257, frames, device=device)
    cond = torch.randn(1, 32, 384, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, torch.tensor([500], device=device), cond, None, None)
    return float(counter.get_total_flops())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.started = time.perf_counter()
        self.result: dict[str, Any] = {
            "machine": torch.cuda.get_device_name()
            if self.device.type == "cuda"
            else platform.processor() or platform.machine(),
            "device": str(self.device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "frames": args.frames,
            "steps": args.steps,
            "guidance": GUIDANCE,
            "latency": [],
            "throughput": [],
            "models": {},
            "skipped": [],
        }
        self.out = Path(args.out or f"bench/results/sample-{self.device.type}.json")
        acceleration = "none"
        self.pipe = MotionPipeline.from_checkpoint(default_checkpoint(), str(self.device), acceleration)
        if args.text_encoder:
            self.pipe.config = self.pipe.config.updated({"condition": {"text_encoder": args.text_encoder}})
        self.random_condition = args.random_condition
        self.result["condition"] = (
            f"random, {PROMPT_TOKENS} tokens" if self.random_condition else f"encoded prompt {PROMPT!r}"
        )
        self.condition()  # load the encoder once (model load is not part of a call)
        torch.manual_seed(0)
        self.models: dict[str, torch.nn.Module] = {
            "mofusion default (packaged)": self.pipe.model,
            "MDM-sized transformer": MDMReference(257).to(self.device).eval(),
            "U-Net 128/256/512 (issue's plan)": MotionUNet1D(
                DenoiserConfig(feature_dim=257, channels=[128, 256, 512], blocks_per_stage=2, time_dim=512)
            )
            .to(self.device)
            .eval(),
        }
        for name, model in self.models.items():
            self.result["models"][name] = {
                "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                "gflop_per_call_b1": round(forward_flops(model, args.frames, self.device) / 1e9, 3),
            }
        self.peak = matmul_peak(self.device)
        self.result["bf16_matmul_peak_tflops_measured"] = (
            None if self.peak is None else round(self.peak / 1e12)
        )

    def condition(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt's condition tokens and mask: encoded, or random of the same shape."""
        if self.random_condition:
            generator = torch.Generator().manual_seed(0)
            shape = (1, PROMPT_TOKENS, self.pipe.config.denoiser.cond_dim)
            tokens = 0.5 * torch.randn(shape, generator=generator)
            return tokens.to(self.device), torch.ones(1, PROMPT_TOKENS, dtype=torch.bool, device=self.device)
        cond, mask = self.pipe.text_condition([PROMPT])
        if cond.shape[1] != PROMPT_TOKENS:
            print(f"note: the model reads the prompt as {cond.shape[1]} tokens, not {PROMPT_TOKENS}")
        return cond, mask

    def attempt(self, label: str, row: Callable[..., None], *args: Any) -> None:
        """``row(*args)``, recorded as failed in ``skipped`` (one line) instead of ending the run:
        for rows of code that has not run on this kind of device yet."""
        try:
            row(*args)
        except Exception as error:  # noqa: BLE001 - any failure of an untried row, said and passed over
            failed = f"{label}: failed ({type(error).__name__}: {first_line(error)[:200]})"
            self.result["skipped"].append(failed)
            print(failed, flush=True)

    def over_budget(self) -> bool:
        return time.perf_counter() - self.started > self.args.budget_s

    def save(self) -> None:
        self.result["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        atomic_write_json(self.out, self.result)

    # -- one configuration ---------------------------------------------------------------------------
    def _sampler(self, kind: str, steps: int) -> Any:
        clip = self.pipe.normalizer.bound if self.pipe.config.sample.clip_x0 else None
        return make_sampler(self.pipe.schedule, kind, steps, 0.0, clip)

    def latency(
        self, label: str, model_name: str, how: str, kind: str = "ddpm", steps: int | None = None
    ) -> None:
        """Batch-1 end-to-end time; ``how`` is ``eager`` (the loop as it was) or an acceleration."""
        if self.over_budget():
            self.result["skipped"].append(label)
            return
        steps = steps or self.args.steps
        model = self.models[model_name]
        pipe, device = self.pipe, self.device
        sampler = self._sampler(kind, steps)
        shape = (1, 257, self.args.frames)
        generator = make_generator(0, device)
        build = 0.0
        if how == "eager":

            def sample(cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return sample_loop(guided(model, cond, mask, GUIDANCE), sampler, shape, generator)
        else:
            acceleration = Acceleration.parse(how, device)
            cond, mask = pipe.text_condition([PROMPT])
            start = time.perf_counter()
            runner = StepRunner(model, sampler, shape, cond, mask, GUIDANCE, acceleration)
            runner.run(generator)
            sync(device)
            build = time.perf_counter() - start

            def sample(cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                runner.set_condition(cond, mask)
                return runner.run(generator)

        def end_to_end() -> None:
            cond, mask = pipe.text_condition([PROMPT])
            x = sample(cond, mask)
            features = pipe.normalizer.denormalize(x.transpose(1, 2).float()).cpu()
            assert torch.isfinite(features).all()

        repeats = self.args.repeats if device.type == "cuda" else 3
        times = timed(end_to_end, device, repeats, warmup=1 if device.type == "cpu" else 3)
        cond, mask = pipe.text_condition([PROMPT])
        encode = statistics.median(timed(lambda: pipe.text_condition([PROMPT]), device, 10))
        row = {
            "label": label,
            "model": model_name,
            "acceleration": how,
            "sampler": f"{kind.upper()} {steps}",
            "median_ms": round(1000 * statistics.median(times), 2),
            "min_ms": round(1000 * min(times), 2),
            "text_encoding_ms": round(1000 * encode, 2),
            "build_s": round(build, 2),
            "repeats": len(times),
        }
        self.result["latency"].append(row)
        print(json.dumps(row), flush=True)
        self.save()

    def library_call(self, label: str, sampler: str | None = None, steps: int | None = None) -> None:
        """``MotionPipeline.generate`` as the library runs it by default (its own sampler settings,
        unless ``sampler``/``steps`` are given, and acceleration for the device), prompt encoding
        and the decoded positions included."""
        if self.over_budget():
            self.result["skipped"].append(label)
            return
        pipe = MotionPipeline.from_checkpoint(default_checkpoint(), str(self.device), "auto")
        if self.args.text_encoder:
            pipe.config = pipe.config.updated({"condition": {"text_encoder": self.args.text_encoder}})

        def call() -> None:
            cond, mask = pipe.text_condition([PROMPT])
            frames = self.args.frames
            pipe.generate(1, frames, seed=0, sampler=sampler, steps=steps, cond=cond, cond_mask=mask)

        repeats = self.args.repeats if self.device.type == "cuda" else 3
        times = timed(call, self.device, repeats, warmup=2 if self.device.type == "cuda" else 1)
        phases = library_phases(pipe, call, self.device, repeats)
        sample = pipe.config.sample
        row = {
            "label": label,
            "model": "mofusion default (packaged)",
            "acceleration": "auto: " + repr(pipe.acceleration.for_batch(1)),
            "sampler": f"{(sampler or sample.sampler).upper()} {steps or sample.steps}",
            "median_ms": round(1000 * statistics.median(times), 2),
            "min_ms": round(1000 * min(times), 2),
            "text_encoding_ms": None,
            "build_s": 0.0,
            "repeats": len(times),
            "phases_ms": phases,
        }
        self.result["latency"].append(row)
        print(json.dumps(row), flush=True)
        self.save()

    def throughput(self, model_name: str, how: str, batches: list[int]) -> None:
        model = self.models[model_name]
        flops_call = self.result["models"][model_name]["gflop_per_call_b1"] * 1e9
        sampler = self._sampler("ddpm", self.args.steps)
        cond, mask = self.condition()
        for batch in batches:
            if self.over_budget():
                self.result["skipped"].append(f"throughput {model_name} {how} batch {batch}")
                continue
            shape = (batch, 257, self.args.frames)
            c, m = cond.expand(batch, -1, -1).contiguous(), mask.expand(batch, -1).contiguous()
            try:
                runner = StepRunner(
                    model, sampler, shape, c, m, GUIDANCE, Acceleration.parse(how, self.device)
                )
            except torch.OutOfMemoryError:
                self.result["skipped"].append(f"throughput {model_name} {how} batch {batch}: out of memory")
                continue
            generator = make_generator(0, self.device)
            repeats = 1 if batch * self.args.steps * flops_call > 1e14 else 3
            times = timed(lambda r=runner, g=generator: r.run(g), self.device, repeats, warmup=1)
            seconds = statistics.median(times)
            # two denoiser calls per step (guidance), each of batch-1 FLOPs times the batch
            rate = 2 * batch * self.args.steps * flops_call / seconds
            row = {
                "model": model_name,
                "acceleration": how,
                "batch": batch,
                "seconds": round(seconds, 4),
                "samples_per_s": round(batch / seconds, 1),
                "denoiser_tflops": round(rate / 1e12, 2),
                "share_of_measured_bf16_peak": None if self.peak is None else round(rate / self.peak, 3),
            }
            self.result["throughput"].append(row)
            print(json.dumps(row), flush=True)
            del runner
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.save()


def table(result: dict[str, Any]) -> str:
    where = f"{result['machine']} ({result['device']}, torch {result['torch']}, {result['threads']} threads)"
    lines = [f"{where}; {result['frames']} frames, guidance {result['guidance']}"]
    for name, info in result["models"].items():
        lines.append(f"  {name}: {info['params_M']} M parameters, {info['gflop_per_call_b1']} GFLOP per call")
    if result.get("bf16_matmul_peak_tflops_measured"):
        lines.append(f"  bf16 matrix peak measured: {result['bf16_matmul_peak_tflops_measured']} TFLOP/s")
    lines.append(
        f"{'latency, batch 1, end to end':64}{'sampler':>10}{'median ms':>11}{'encode ms':>11}{'build s':>9}"
    )
    for r in result["latency"]:
        encode = "-" if r["text_encoding_ms"] is None else f"{r['text_encoding_ms']:.2f}"
        lines.append(
            f"{r['label']:64}{r['sampler']:>10}{r['median_ms']:>11.2f}{encode:>11}{r['build_s']:>9.2f}"
        )
        if r.get("phases_ms"):
            lines.append(
                "    of which (ms, timed apart): "
                + ", ".join(f"{k} {v:.2f}" for k, v in r["phases_ms"].items())
            )
    if result["throughput"]:
        lines.append(f"{'throughput':48}{'batch':>7}{'samples/s':>11}{'TFLOP/s':>9}{'of peak':>9}")
        for r in result["throughput"]:
            share = (
                "-" if r["share_of_measured_bf16_peak"] is None else f"{r['share_of_measured_bf16_peak']:.1%}"
            )
            name = f"{r['model']}, {r['acceleration']}"
            lines.append(
                f"{name:48}{r['batch']:>7}{r['samples_per_s']:>11.1f}{r['denoiser_tflops']:>9.2f}{share:>9}"
            )
    if result["skipped"]:
        lines.append("skipped (over the time budget): " + "; ".join(result["skipped"]))
    return "\n".join(lines)


def library_rows(bench: Bench) -> None:
    bench.library_call("ours: library generate(), default settings (positions decoded)")
    bench.library_call("ours: library generate(), DPM-SDE 10 (positions decoded)", "dpm-sde", 10)
    bench.library_call("ours: library generate(), DDPM 14 (positions decoded)", "ddpm", 14)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=400.0)
    parser.add_argument("--compile", action="store_true", help="also the torch.compile rows (slow to build)")
    parser.add_argument("--text-encoder", default=None, help="a local copy of the text encoder folder")
    parser.add_argument(
        "--random-condition",
        action="store_true",
        help="throughput only, on random condition tokens (no text encoder needed)",
    )
    parser.add_argument(
        "--library-only",
        action="store_true",
        help="only the library's generate() rows (a quick check of its defaults)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    gpu = bench.device.type == "cuda"
    ours, mdm, plan = list(bench.models)
    if args.library_only:
        library_rows(bench)
    elif args.random_condition:
        batches = args.batches or ([1, 64, 1024] if gpu else [1, 4])
        how = "bf16+graph" if gpu else "none"
        bench.throughput(ours, "graph" if gpu else "none", batches)
        if gpu:
            bench.throughput(ours, how, batches)
        bench.throughput(mdm, how, batches)
        if gpu and args.compile:
            bench.throughput(ours, "bf16+compile+graph", [max(batches)])
            bench.throughput(mdm, "bf16+compile+graph", [max(batches)])
    elif gpu:
        torch.backends.cudnn.benchmark = True
        batches = args.batches or [1, 4, 16, 64, 256, 1024]
        bench.latency("ours: eager loop (before)", ours, "eager")
        bench.latency("ours: step runner (condition, step tables once)", ours, "none")
        bench.latency("ours: + bf16 only", ours, "bf16")
        bench.latency("ours: + CUDA graph only", ours, "graph")
        bench.latency("ours: bf16 + CUDA graph", ours, "bf16+graph")
        bench.latency("ours: bf16 throughout (bf16-all) + CUDA graph", ours, "bf16-all+graph")
        # the fused group norms ran on an H200 only: on another GPU a failure is recorded, not fatal
        fused_label = "ours: bf16-all + fused group norms + CUDA graph"
        bench.attempt(fused_label, bench.latency, fused_label, ours, "bf16-all+fused+graph")
        fused_label = "ours: bf16-all + fused norms + CUDA graph, DDPM 20"
        bench.attempt(fused_label, bench.latency, fused_label, ours, "bf16-all+fused+graph", "ddpm", 20)
        # channels-last has not run on a GPU yet: recorded if it fails, as the fused rows were
        last = "bf16-all+fused+channels-last+graph"
        last_label = "ours: bf16-all + fused norms + channels-last + CUDA graph"
        for label, steps in ((last_label, None), (last_label + ", DDPM 20", 20)):
            bench.attempt(label, bench.latency, label, ours, last, "ddpm", steps)
        bench.latency("ours: CUDA graph, DDPM 20", ours, "graph", "ddpm", 20)
        bench.latency("ours: bf16 + CUDA graph, DDPM 20", ours, "bf16+graph", "ddpm", 20)
        bench.latency("ours: CUDA graph, DDPM 14", ours, "graph", "ddpm", 14)
        bench.latency("ours: CUDA graph, DDPM 10", ours, "graph", "ddpm", 10)
        bench.latency("ours: CUDA graph, DPM-SDE 10", ours, "graph", "dpm-sde", 10)
        bench.latency("MDM-sized: eager loop", mdm, "eager")
        bench.latency("MDM-sized: CUDA graph", mdm, "graph")
        bench.latency("MDM-sized: bf16 + CUDA graph", mdm, "bf16+graph")
        bench.latency("U-Net 128/256/512: CUDA graph", plan, "graph")
        library_rows(bench)
        if args.compile:
            bench.latency("ours: compile + CUDA graph", ours, "compile+graph")
            bench.latency("ours: compile + CUDA graph, DDPM 20", ours, "compile+graph", "ddpm", 20)
            bench.latency("ours: compile + CUDA graph, DPM-SDE 10", ours, "compile+graph", "dpm-sde", 10)
            bench.latency("ours: bf16 + compile + CUDA graph", ours, "bf16+compile+graph")
            bench.latency("MDM-sized: bf16 + compile + CUDA graph", mdm, "bf16+compile+graph")
        bench.throughput(ours, "graph", batches)
        bench.throughput(ours, "bf16+graph", batches)
        bench.throughput(ours, "bf16-all+graph", batches)
        bench.throughput(mdm, "bf16+graph", batches)
        bench.attempt("throughput, fused", bench.throughput, ours, "bf16-all+fused+graph", batches)
        bench.attempt("throughput, channels-last", bench.throughput, ours, last, batches)
        if args.compile:
            bench.throughput(ours, "bf16+compile+graph", [max(batches)])
            bench.throughput(mdm, "bf16+compile+graph", [max(batches)])
            bench.throughput(ours, "bf16-all+compile+graph", [max(batches)])
    else:
        batches = args.batches or [1, 4]
        bench.latency("ours: eager loop (before)", ours, "eager")
        bench.latency("ours: step runner, float32", ours, "none")
        bench.latency("ours: step runner, float32, channels-last", ours, "channels-last")
        bench.latency("ours: step runner, DDPM 20", ours, "none", "ddpm", 20)
        bench.latency("ours: step runner, DDPM 14", ours, "none", "ddpm", 14)
        bench.latency("ours: step runner, DDPM 10", ours, "none", "ddpm", 10)
        bench.latency("ours: step runner, DPM-SDE 10", ours, "none", "dpm-sde", 10)
        library_rows(bench)
        bench.latency("MDM-sized: step runner, float32", mdm, "none")
        bench.latency("U-Net 128/256/512: step runner, float32", plan, "none")
        bench.throughput(ours, "none", batches)
        bench.throughput(ours, "channels-last", batches)
        bench.throughput(mdm, "none", batches)
    bench.save()
    print(table(bench.result))
    print(f"written to {bench.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
