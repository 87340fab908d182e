"""The fused group norm + SiLU: PyTorch's own result wherever the kernel does not run, the kernel
(in Triton's interpreter, on the CPU, where Triton is installed) against ``F.group_norm`` and
``F.silu`` in both layouts, and a step runner with it against one without."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mofusion.fast import Acceleration, ModelCopies
from mofusion.kernels import group_norm_act


def test_without_the_kernel_it_is_pytorchs_group_norm() -> None:
    """On a CPU without Triton's interpreter (and with gradients on, anywhere) the function is
    exactly ``F.silu(F.group_norm(...))``, or the norm alone."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 runs the kernel itself on the CPU")
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 12, 9), torch.randn(12), torch.randn(12)
    assert torch.equal(group_norm_act(x, 4, w, b, 1e-5, True), F.silu(F.group_norm(x, 4, w, b, 1e-5)))
    assert torch.equal(group_norm_act(x, 4, w, b, 1e-5, False), F.group_norm(x, 4, w, b, 1e-5))
    assert torch.equal(
        group_norm_act(x, 4, w, b, 1e-5, True, fused=False), F.silu(F.group_norm(x, 4, w, b, 1e-5))
    )
    # a channels-last input (B, T, C in memory) is normalised in its layout, to rounding
    last = group_norm_act(x.transpose(1, 2).contiguous().transpose(1, 2), 4, w, b, 1e-5, True)
    assert last.transpose(1, 2).is_contiguous() and not last.is_contiguous()
    assert torch.allclose(last, F.silu(F.group_norm(x, 4, w, b, 1e-5)), atol=1e-5)


def test_fused_copies_leave_the_others_alone() -> None:
    """``fused`` asks for a copy of its own: the model and the unfused copies keep PyTorch's norms."""
    from test_fast import _model

    model = _model()
    copies = ModelCopies(model)
    fused = copies.step_model("bf16", True)
    assert fused is copies.step_model("bf16", True) and fused is not copies.step_model("bf16")
    flags = [m.fused_norm for m in fused.modules() if hasattr(type(m), "fused_norm")]
    assert all(flags) and len(flags) == sum(hasattr(type(m), "fused_norm") for m in model.modules()) > 3
    for other in (model, copies.step_model("bf16"), copies.step_model("float32", False)):
        assert not any(m.fused_norm for m in other.modules() if hasattr(type(m), "fused_norm"))
    assert Acceleration.parse("bf16-all+fused", torch.device("cpu")).fused_norm


_INTERPRETED = textwrap.dedent(
    """
    import itertools
    import torch, torch.nn.functional as F
    from mofusion.kernels import fused_available, group_norm_act

    torch.manual_seed(0)
    worst = {}
    for dtype in (torch.float32, torch.bfloat16):
        # a 10-s motion's shapes at batch 1 (guided) and odd ones: groups of 7 x 11, 5 x 1
        for b, c, t, g in ((2, 96, 300, 8), (2, 384, 75, 8), (3, 77, 11, 11), (1, 20, 1, 4)):
            x = (3 * torch.randn(b, c, t) + 1).to(dtype)
            w, bias = torch.randn(c).to(dtype), torch.randn(c).to(dtype)
            assert fused_available(x)
            # channels first, and channels last: (B, T, C) in memory, as a channels-last step's
            for given, silu in itertools.product((x, x.transpose(1, 2).contiguous().transpose(1, 2)), (True, False)):
                with torch.no_grad():
                    got = group_norm_act(given, g, w, bias, 1e-5, silu)
                ref = F.group_norm(x.float(), g, w.float(), bias.float(), 1e-5)
                ref = F.silu(ref) if silu else ref
                assert got.dtype == dtype and got.shape == x.shape and got.stride() == given.stride()
                # float32 to rounding; bfloat16 rounded once from float32: within one of its units
                # (2^-7 of the value; a GPU rounds to nearest, half that, where Triton's
                # interpreter cuts the bits off)
                rtol, atol = (1e-5, 1e-5) if dtype == torch.float32 else (2**-7 + 1e-4, 1e-4)
                ratio = ((got.float() - ref).abs() / (atol + rtol * ref.abs())).max().item()
                worst[str(dtype)] = max(worst.get(str(dtype), 0.0), ratio)
    assert max(worst.values()) <= 1.0, worst

    # a step runner with the fused norms samples as one without (float32: to rounding)
    import sys
    sys.path.insert(0, "tests")
    from test_fast import _model
    from mofusion.config import DiffusionConfig
    from mofusion.diffusion import NoiseSchedule, make_generator, make_sampler
    from mofusion.fast import Acceleration, StepRunner

    model = _model()
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=100)), "ddpm", 5, 0.0, None)
    cond = torch.randn(2, 4, 8)
    plain = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, Acceleration(runner=True))
    fused = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, Acceleration(runner=True, fused_norm=True))
    assert fused.model is not model and plain.model is model
    a = plain.run(make_generator(0))

    def unfused(*args, **kwargs):
        raise AssertionError("an unfused group norm or SiLU in the fused step")

    last = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0,
                      Acceleration(runner=True, fused_norm=True, channels_last=True))  # fmt: skip
    F.group_norm, F.silu = unfused, unfused  # the fused step calls neither
    b = fused.run(make_generator(0))
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    c = last.run(make_generator(0))  # fused and channels-last
    assert torch.allclose(a, c, atol=1e-4), (a - c).abs().max()
    print("ok", worst)
    """
)


def test_the_kernel_in_tritons_interpreter() -> None:
    pytest.importorskip("triton", reason="Triton is not installed (it comes with PyTorch's CUDA wheels)")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _INTERPRETED], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_runner_on_gpu() -> None:
    """On a GPU, in float32 and all in bf16, under a CUDA graph: the fused step samples as the
    unfused one, and launches at least 40 kernels fewer (16 norms of 3 and 11 SiLUs become 16)."""
    from torch.profiler import ProfilerActivity, profile

    from mofusion.checkpoint import default_checkpoint
    from mofusion.config import DiffusionConfig
    from mofusion.diffusion import NoiseSchedule, make_generator, make_sampler
    from mofusion.fast import StepRunner
    from mofusion.pipeline import MotionPipeline
    from test_fast import _model

    model = _model("cuda")
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=100), "cuda"), "ddpm", 10, 0.0, None)
    cond = torch.randn(2, 4, 8, device="cuda")
    for every in (False, True):
        base = Acceleration(runner=True, bf16=every, bf16_all=every, cuda_graph=True)
        plain = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, base)
        fused = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, replace(base, fused_norm=True))
        a, b = plain.run(make_generator(0, "cuda")), fused.run(make_generator(0, "cuda"))
        # TF32 convolutions may pick other algorithms in the two graphs: compare relatively
        assert float((a - b).norm() / a.norm()) < (0.05 if every else 1e-2)

    # the packaged model's guided step at batch 1, 300 frames, all in bf16, run eagerly and counted
    pipe = MotionPipeline.from_checkpoint(default_checkpoint(), "cuda", "bf16-all")
    text_cond = torch.randn(1, 12, pipe.model.config.cond_dim, device="cuda")
    kernels = {}
    for fused_norm in (False, True):
        acceleration = Acceleration(runner=True, bf16=True, bf16_all=True, fused_norm=fused_norm)
        runner = StepRunner(pipe.model, sampler, (1, pipe.spec.dim, 300), text_cond, None, 2.5, acceleration)
        with torch.no_grad():  # as run() steps (with gradients on, the norms are PyTorch's)
            runner._run_step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as trace:
                runner._run_step()
                torch.cuda.synchronize()
        kernels[fused_norm] = sum(1 for e in trace.events() if e.device_type.name == "CUDA")
    assert kernels[True] <= kernels[False] - 40, kernels


def test_a_kernel_that_cannot_run_warns_once_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton's compiler or driver failing (an untried GPU) is one warning that says what failed,
    then PyTorch's norm, in that call and every one after (the kernel is the GPU default, so it
    must not fail a generation), not a compiler's trace."""
    import warnings

    import mofusion.kernels as kernels

    launches = []

    class _Failing:
        def __getitem__(self, grid: object) -> object:
            def launch(*args: object, **kwargs: object) -> None:
                launches.append(grid)
                raise RuntimeError("PassManager::run failed\n(hundreds of lines of MLIR)")

            return launch

    monkeypatch.setattr(kernels, "_kernel", lambda: _Failing())
    monkeypatch.setattr(kernels, "_FAILED", [])
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # fused_available on the CPU, the kernel stood in for
    x, weight, bias = torch.randn(1, 8, 5), torch.rand(8), torch.randn(8)
    expected = F.silu(F.group_norm(x, 2, weight, bias, 1e-5))
    failed = r"could not run here \(RuntimeError: PassManager::run failed\); using PyTorch's"
    with torch.no_grad(), pytest.warns(RuntimeWarning, match=failed):
        first = group_norm_act(x, 2, weight, bias, 1e-5, True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second launch
        second = group_norm_act(x, 2, weight, bias, 1e-5, True)
    assert len(launches) == 1 and not kernels.fused_available(x)
    assert torch.equal(first, expected) and torch.equal(second, expected)
