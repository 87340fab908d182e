"""The accelerated sampling loop: the same samples as the eager loop (same seed, same noise order),
for both samplers, with and without guidance and clipping; bf16 close to float32; CUDA graphs on a GPU."""

from __future__ import annotations

import itertools
import shutil
from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mofusion.config import DenoiserConfig, DiffusionConfig
from mofusion.denoiser import MotionUNet1D
from mofusion.diffusion import NoiseSchedule, guided, make_generator, make_sampler, sample_loop
from mofusion.errors import MofusionError
from mofusion.fast import Acceleration, StepRunner


def _perturbed(cfg: DenoiserConfig, device: str = "cpu") -> MotionUNet1D:
    """A small model of ``cfg`` (seed 0) with every parameter moved off its initial value:
    zero-initialised outputs would make every step trivially equal and hide the condition."""
    torch.manual_seed(0)
    model = MotionUNet1D(cfg).to(device).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _model(device: str = "cpu") -> MotionUNet1D:
    cfg = DenoiserConfig(
        feature_dim=12, channels=[16, 32], blocks_per_stage=1, time_dim=32, cond_dim=8, heads=2
    )
    return _perturbed(cfg, device)


def _music_model(device: str = "cpu") -> MotionUNet1D:
    """A small music model: an aligned, pooled condition of 5-wide frames."""
    cfg = DenoiserConfig(feature_dim=12, channels=[16, 32], cond_dim=16, heads=2, cond_input_dim=5,
                         cond_aligned=True, cond_pooled=True, dropout=0.0)  # fmt: skip
    return _perturbed(cfg, device)


class _OpNames(TorchDispatchMode):
    """Records the name of every ATen operation dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _eager(model, sampler, shape, cond, mask, scale, seed):
    fn = guided(model, cond, mask, scale)
    with torch.no_grad():
        return sample_loop(fn, sampler, shape, make_generator(seed, sampler.schedule.device))


@pytest.mark.parametrize(
    ("kind", "eta", "scale", "clip", "prediction"),
    [
        ("ddpm", 0.0, 2.5, True, "epsilon"),
        ("ddim", 0.0, 1.0, False, "epsilon"),
        ("ddim", 0.5, 3.0, True, "epsilon"),
        ("ddpm", 0.0, 1.0, False, "epsilon"),
        ("ddpm", 0.0, 2.5, True, "sample"),
        ("ddim", 0.5, 2.5, True, "sample"),
        ("dpm", 0.0, 2.5, True, "epsilon"),
        ("dpm", 0.0, 1.0, False, "epsilon"),
        ("dpm-sde", 0.0, 2.5, True, "epsilon"),
        ("dpm-sde", 0.0, 2.5, False, "sample"),
    ],
)
def test_step_runner_equals_the_eager_loop(
    kind: str, eta: float, scale: float, clip: bool, prediction: str
) -> None:
    model = _model()
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100, prediction=prediction))
    bound = torch.full((12,), 2.0) if clip else None
    sampler = make_sampler(schedule, kind, 10, eta, bound)
    cond, mask = (
        torch.randn(3, 5, 8),
        torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4]),
    )
    shape = (3, 12, 16)
    expected = _eager(model, sampler, shape, cond, mask, scale, seed=7)
    runner = StepRunner(model, sampler, shape, cond, mask, scale, Acceleration())
    got = runner.run(make_generator(7))
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    if prediction == "sample":  # and not what the same network gives read as noise
        noise_sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=100)), kind, 10, eta, bound)
        assert not torch.allclose(got, _eager(model, noise_sampler, shape, cond, mask, scale, seed=7))
    # a second run with another prompt reuses the runner and matches the eager loop for that prompt
    cond2 = torch.randn(3, 5, 8)
    runner.set_condition(cond2, mask)
    assert torch.allclose(
        runner.run(make_generator(8)), _eager(model, sampler, shape, cond2, mask, scale, seed=8), atol=1e-5
    )


class _Uncached(torch.nn.Module):
    """A denoiser without a sampling cache (as the MDM-sized reference of bench/): the runner runs
    both guidance passes through it and combines them itself."""

    def __init__(self, model: MotionUNet1D) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, t, cond=None, cond_mask=None, drop_cond=None):
        return self.model(x, t, cond, cond_mask, drop_cond)


@pytest.mark.parametrize(("scale", "prediction"), [(2.5, "epsilon"), (1.0, "epsilon"), (2.5, "sample")])
def test_step_runner_of_a_model_without_a_sampling_cache(scale: float, prediction: str) -> None:
    model = _model()
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=100, prediction=prediction)), "ddpm", 6,
                           0.0, torch.full((12,), 2.0))  # fmt: skip
    cond, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    runner = StepRunner(_Uncached(model), sampler, (2, 12, 16), cond, mask, scale, Acceleration())
    assert runner.cache is None
    expected = _eager(model, sampler, (2, 12, 16), cond, mask, scale, seed=3)
    assert torch.allclose(runner.run(make_generator(3)), expected, atol=1e-5)


def test_step_runner_unconditional_and_progress_callback() -> None:
    model = _model()
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=50)), "ddpm", 5)
    seen: list[int] = []
    got = StepRunner(model, sampler, (2, 12, 8), None, None, 2.5, Acceleration()).run(
        make_generator(1), callback=lambda i, out: seen.append(i)
    )
    assert seen == [0, 1, 2, 3, 4]
    assert torch.allclose(got, _eager(model, sampler, (2, 12, 8), None, None, 2.5, seed=1), atol=1e-5)


def test_bf16_stays_close_to_float32() -> None:
    model = _model()
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=100)), "ddim", 10)
    cond = torch.randn(2, 4, 8)
    exact = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, Acceleration()).run(make_generator(3))
    half = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, Acceleration(bf16=True)).run(
        make_generator(3)
    )
    relative = (half - exact).norm() / exact.norm()
    assert 0 < relative < 0.05


def test_bf16_all_runs_the_step_in_bfloat16_without_casts() -> None:
    """bf16-all: the step's model is bfloat16 throughout and its tables bfloat16, so nothing in the
    step is cast but the input (on a GPU, autocast casts around every normalisation and softmax);
    the samples stay close to float32's, for a text and a music model."""
    music = _music_model()
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2:] = False
    sampler = make_sampler(
        NoiseSchedule(DiffusionConfig(num_steps=100)), "ddpm", 10, 0.0, torch.full((12,), 2.0)
    )
    for model, cond, cond_mask in (
        (_model(), torch.randn(2, 4, 8), mask),
        (music, torch.randn(2, 16, 5), None),
    ):
        exact = StepRunner(model, sampler, (2, 12, 16), cond, cond_mask, 2.0, Acceleration())
        every = StepRunner(
            model, sampler, (2, 12, 16), cond, cond_mask, 2.0, Acceleration(bf16=True, bf16_all=True)
        )
        assert all(p.dtype == torch.bfloat16 for p in every.model.parameters())
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert every.cache is not None and every.cache.time_table.dtype == torch.bfloat16
        got, expected = every.run(make_generator(3)), exact.run(make_generator(3))
        assert got.dtype == torch.float32  # the sampler's state stays float32
        assert 0 < float((got - expected).norm() / expected.norm()) < 0.05
        every.step_index.fill_(4)
        with torch.no_grad(), _OpNames() as ops:
            every._run_step()
        assert ops.names.count("aten._to_copy.default") == 1  # x, once
    with pytest.raises(MofusionError, match="sampling cache"):
        StepRunner(_Uncached(_model()), sampler, (2, 12, 16), torch.randn(2, 4, 8), mask, 2.0,
                   Acceleration(bf16=True, bf16_all=True))  # fmt: skip


def test_channels_last_step_samples_as_the_channels_first_one() -> None:
    """channels-last: every convolution of the step's copy runs channels-last, and every one but
    those that read the step's input reads a ``(B, T, C)`` tensor (the layout survives the norms,
    the attention, the joins and the guided copies); the samples are the channels-first step's up
    to rounding, for a text model, a music model (aligned attention, pooled condition) and an edit
    of a residual model; the caller's model is left as it was."""
    from mofusion.denoiser import ChannelsLastConv1d
    from mofusion.editing import interpolate_known
    from mofusion.fast import EditMode
    from mofusion.kernels import is_channels_last

    sampler = make_sampler(
        NoiseSchedule(DiffusionConfig(num_steps=100)), "ddpm", 8, 0.0, torch.full((12,), 2.0)
    )
    shape = (2, 12, 16)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2:] = False
    known_mask = torch.zeros(shape, dtype=torch.bool)
    known_mask[:, :, :4] = True
    known = torch.where(known_mask, torch.randn(shape), torch.zeros(()))
    offset = interpolate_known(known, known_mask)
    cases = (
        (_model(), torch.randn(2, 4, 8), mask, None),
        (_music_model(), torch.randn(2, 16, 5), None, None),
        (_editing_model(True), torch.randn(2, 4, 8), mask, EditMode(True, True, True)),
    )
    for model, cond, cond_mask, edit in cases:
        runners = [
            StepRunner(
                model,
                sampler,
                shape,
                cond,
                cond_mask,
                2.0,
                Acceleration(runner=True, channels_last=last),
                edit,
            )  # fmt: skip
            for last in (False, True)
        ]
        convs = [m for m in runners[1].model.modules() if isinstance(m, ChannelsLastConv1d)]
        assert len(convs) == sum(isinstance(m, torch.nn.Conv1d) for m in model.modules()) > 5
        assert not any(isinstance(m, ChannelsLastConv1d) for m in model.modules())
        reads: dict[str, bool] = {}
        for name, module in runners[1].model.named_modules():
            if isinstance(module, ChannelsLastConv1d):
                module.register_forward_pre_hook(
                    lambda _, args, name=name, reads=reads: reads.__setitem__(name, is_channels_last(args[0]))
                )
        samples = []
        for runner in runners:
            if edit is not None:
                sampler.clip_offset = offset
                runner.set_known(known_mask, offset, torch.zeros(shape), offset)
            samples.append(runner.run(make_generator(3)))
        first_layer = {"input", "input_skip"}
        assert reads and all(last for name, last in reads.items() if name not in first_layer), reads
        assert not any(reads[name] for name in first_layer)
        a, b = samples
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
        assert not b.isnan().any() and a.abs().max() > 0.1
    sampler.clip_offset = None
    # all in bf16 too (the GPU's precision): close to the channels-first bf16 step
    every = Acceleration(runner=True, bf16=True, bf16_all=True)
    a, b = (
        StepRunner(_model(), sampler, shape, cases[0][1], mask, 2.0, replace(every, channels_last=last)).run(
            make_generator(3)
        )
        for last in (False, True)
    )
    assert float((a - b).norm() / a.norm()) < 0.02, float((a - b).norm() / a.norm())
    with pytest.raises(MofusionError, match="sampling cache"):
        StepRunner(_Uncached(_model()), sampler, shape, torch.randn(2, 4, 8), mask, 2.0,
                   Acceleration(channels_last=True))  # fmt: skip


@pytest.mark.skipif(shutil.which("c++") is None, reason="torch.compile on a CPU needs a C++ compiler")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit's, from inside torch.compile
def test_compiled_step_samples_as_the_eager_step() -> None:
    """torch.compile of the step (Inductor, on the CPU here) computes what the eager step computes,
    channels first and channels-last (whose joins then leave the layout to the compiler)."""
    try:  # Inductor builds C++ on a CPU: a machine without its toolchain skips, saying why
        torch.compile(lambda x: x * 2)(torch.ones(2))
    except Exception as error:
        pytest.skip(f"torch.compile does not run here: {type(error).__name__}: {str(error)[:200]}")
    model = _model()
    sampler = make_sampler(
        NoiseSchedule(DiffusionConfig(num_steps=100)), "ddpm", 5, 0.0, torch.full((12,), 2.0)
    )
    cond = torch.randn(2, 4, 8)
    expected = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, Acceleration(runner=True)).run(
        make_generator(0)
    )
    for last in (False, True):
        acceleration = Acceleration(runner=True, compile=True, channels_last=last)
        got = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, acceleration).run(make_generator(0))
        assert torch.allclose(got, expected, atol=1e-4), (last, (got - expected).abs().max())


def test_channels_last_joins_keep_the_layout_and_gradients() -> None:
    """The joins of a channels-last step write channels-last without gradients (the sampling
    step), and stay differentiable with them (``cat(out=...)`` has no gradient)."""
    from mofusion.denoiser import _cat
    from mofusion.kernels import is_channels_last

    a, b = (torch.randn(2, 5, 7).transpose(1, 2).contiguous().transpose(1, 2) for _ in range(2))
    with torch.no_grad():
        joined = _cat([a, b], dim=1)
    assert is_channels_last(joined) and torch.equal(joined, torch.cat((a, b), dim=1))
    a.requires_grad_(True)
    joined = _cat([a, b], dim=0)
    assert torch.equal(joined, torch.cat((a, b), dim=0))
    joined.sum().backward()
    assert a.grad is not None and torch.equal(a.grad, torch.ones_like(a))


def test_channels_last_convolution_is_the_convolution() -> None:
    """ChannelsLastConv1d computes its nn.Conv1d's function for any input layout, writes its
    output channels-last (a 1x1 one: in its input's layout), and refuses a convolution it cannot represent."""
    from mofusion.denoiser import ChannelsLastConv1d
    from mofusion.kernels import is_channels_last

    torch.manual_seed(0)
    x = torch.randn(3, 6, 11)
    for conv in (torch.nn.Conv1d(6, 5, 5, padding=2), torch.nn.Conv1d(6, 6, 3, stride=2, padding=1),
                 torch.nn.Conv1d(6, 4, 1, bias=False)):  # fmt: skip
        last = ChannelsLastConv1d(conv)
        for given in (x, x.transpose(1, 2).contiguous().transpose(1, 2)):
            with torch.no_grad():
                got, expected = last(given), conv(given)
            # a 1x1 kernel's layout is ambiguous, so its output follows the input's
            assert got.shape == expected.shape
            assert is_channels_last(got) or (conv.kernel_size == (1,) and given.is_contiguous())
            assert torch.allclose(got, expected, atol=1e-5)
    for conv in (torch.nn.Conv1d(6, 6, 3, groups=2), torch.nn.Conv1d(6, 6, 3, dilation=2),
                 torch.nn.Conv1d(6, 6, 3, padding=1, padding_mode="reflect")):  # fmt: skip
        with pytest.raises(ValueError, match="plain convolutions"):
            ChannelsLastConv1d(conv)


def test_acceleration_parsing() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # the step runner, float32, channels-last (measured on 2 CPU cores)
    assert Acceleration.parse("auto", cpu) == Acceleration(runner=True, channels_last=True)
    assert Acceleration.parse("auto", torch.device("mps")) == Acceleration(runner=True)  # not measured there
    assert Acceleration.parse("auto", cpu).any and not Acceleration.parse("none", cpu).any
    gpu = Acceleration.parse("auto", cuda)
    assert gpu.cuda_graph and not gpu.compile and gpu.fused_norm  # fused norms: measured on an H200
    assert gpu.for_batch(1).bf16_all and gpu.for_batch(1024).bf16_all  # bfloat16 throughout, from batch 1
    assert Acceleration.parse("bf16+compile", cpu) == Acceleration(runner=True, bf16=True, compile=True)
    every = Acceleration.parse("bf16-all+graph", cuda)
    assert every == Acceleration(runner=True, bf16=True, cuda_graph=True, bf16_all=True)
    below = replace(every, bf16_min_batch=64).for_batch(16)
    assert not below.bf16 and not below.bf16_all and replace(every, bf16_min_batch=64).for_batch(64).bf16_all
    assert not Acceleration.parse("none", cuda).any
    with pytest.raises(MofusionError, match="CUDA graphs"):
        Acceleration.parse("graph", cpu)
    with pytest.raises(MofusionError, match="unknown acceleration"):
        Acceleration.parse("fp8", cpu)
    assert Acceleration.parse(" bf16 + runner ", cpu) == Acceleration(runner=True, bf16=True)
    assert Acceleration.parse("channels-last", cpu) == Acceleration(runner=True, channels_last=True)
    for text in ("+", "bf16+", "bf16++runner"):
        with pytest.raises(MofusionError, match="empty part"):
            Acceleration.parse(text, cpu)


def test_set_condition_refuses_another_shape() -> None:
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=20)), "ddpm", 4)
    runner = StepRunner(_model(), sampler, (2, 12, 8), torch.randn(2, 5, 8), None, 2.0, Acceleration())
    with pytest.raises(MofusionError, match="shape"):
        runner.set_condition(torch.randn(2, 6, 8), None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_equals_the_eager_loop_on_gpu() -> None:
    model = _model("cuda")
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100), "cuda")
    sampler = make_sampler(schedule, "ddpm", 10, 0.0, torch.full((12,), 2.0))
    cond = torch.randn(2, 5, 8, device="cuda")
    expected = _eager(model, sampler, (2, 12, 16), cond, None, 2.5, seed=5)
    runner = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.5, Acceleration(cuda_graph=True))
    got = runner.run(make_generator(5, "cuda"))
    # TF32 convolutions may pick other algorithms in and out of the graph: compare relatively
    assert float((got - expected).norm() / expected.norm()) < 1e-2
    assert torch.allclose(runner.run(make_generator(5, "cuda")), got)  # replays are repeatable
    half = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.5, Acceleration(bf16=True, cuda_graph=True))
    assert float((half.run(make_generator(5, "cuda")) - expected).norm() / expected.norm()) < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_channels_last_graph_on_gpu() -> None:
    """Channels-last under a CUDA graph, with the fused norms (their channels-last kernel) and
    without, in float32 and all in bf16, for a text and a music model: the channels-first step's
    samples, up to TF32's and bf16's rounding."""
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100), "cuda")
    sampler = make_sampler(schedule, "ddpm", 10, 0.0, torch.full((12,), 2.0))
    cases = ((_model("cuda"), torch.randn(2, 5, 8, device="cuda")),
             (_music_model("cuda"), torch.randn(2, 16, 5, device="cuda")))  # fmt: skip
    for (model, cond), every, fused in itertools.product(cases, (False, True), (False, True)):
        base = Acceleration(runner=True, bf16=every, bf16_all=every, cuda_graph=True, fused_norm=fused)
        first = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.5, base)
        last = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.5, replace(base, channels_last=True))
        a, b = first.run(make_generator(5, "cuda")), last.run(make_generator(5, "cuda"))
        assert torch.isfinite(b).all()
        assert float((a - b).norm() / a.norm()) < (0.05 if every else 1e-2), (every, fused)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["float32", "bf16", "bf16-all"])
def test_condition_graph_takes_a_new_prompt_on_gpu(precision: str) -> None:
    """A graphed runner given another prompt (masked, and a song for a music model) replays its
    condition graph: the same samples as a runner built for that prompt; in bf16-all, close to
    float32's too."""
    music = _music_model("cuda")
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100), "cuda")
    sampler = make_sampler(schedule, "ddpm", 10, 0.0, torch.full((12,), 2.0))
    mask = torch.ones(2, 5, dtype=torch.bool, device="cuda")
    mask[1, 3:] = False
    cases = [
        (_model("cuda"), torch.randn(2, 5, 8, device="cuda"), torch.randn(2, 5, 8, device="cuda"), mask),
        (music, torch.randn(2, 16, 5, device="cuda"), torch.randn(2, 16, 5, device="cuda"), None),
    ]
    for model, first, second, cond_mask in cases:
        acceleration = Acceleration(
            bf16=precision != "float32", bf16_all=precision == "bf16-all", cuda_graph=True
        )
        runner = StepRunner(model, sampler, (2, 12, 16), first, cond_mask, 2.5, acceleration)
        assert runner.condition_graph is not None
        runner.set_condition(second, cond_mask)
        fresh = StepRunner(model, sampler, (2, 12, 16), second, cond_mask, 2.5, acceleration)
        got, expected = runner.run(make_generator(3, "cuda")), fresh.run(make_generator(3, "cuda"))
        assert float((got - expected).norm() / expected.norm()) < 1e-3
        runner.set_condition(first, cond_mask)
        back = StepRunner(model, sampler, (2, 12, 16), first, cond_mask, 2.5, acceleration)
        got, expected = runner.run(make_generator(3, "cuda")), back.run(make_generator(3, "cuda"))
        assert float((got - expected).norm() / expected.norm()) < 1e-3
        assert float((got - fresh.run(make_generator(3, "cuda"))).norm() / expected.norm()) > 1e-2
        exact = StepRunner(model, sampler, (2, 12, 16), first, cond_mask, 2.5, Acceleration(cuda_graph=True))
        assert float((got - exact.run(make_generator(3, "cuda"))).norm() / expected.norm()) < 0.05


def test_graphed_parts_make_no_tensor_from_host_data() -> None:
    """What a CUDA graph captures (the step and the condition refresh) must not build a tensor from
    Python data: on a GPU that is a copy from pageable host memory, which capture refuses (an
    aligned music model's distance penalty did, so its graphs failed). Checked here on the CPU,
    where the same code dispatches ``aten.lift_fresh`` for such a tensor (a scalar assigned into a
    slice too: then only a fill, but one rule is simpler to keep)."""
    mask = torch.ones(2, 5, dtype=torch.bool)
    cases = [(_model(), torch.randn(2, 5, 8), mask), (_music_model(), torch.randn(2, 16, 5), None)]
    sampler = make_sampler(
        NoiseSchedule(DiffusionConfig(num_steps=50)), "dpm-sde", 5, 0.0, torch.full((12,), 2.0)
    )
    for model, cond, cond_mask in cases:
        for acceleration in (Acceleration(), Acceleration(bf16=True), Acceleration(bf16=True, bf16_all=True)):
            runner = StepRunner(model, sampler, (2, 12, 16), cond, cond_mask, 2.5, acceleration)
            with torch.no_grad(), _OpNames() as ops:
                runner._run_step()
                runner._refresh_condition()
            assert ops.names, "nothing was dispatched"
            # nor read a value back to the host (a synchronisation, refused as well)
            refused = ("lift_fresh", "_local_scalar_dense", "nonzero", "item")
            assert not [name for name in ops.names if any(word in name for word in refused)]
    # an edit's step: the model reads the known channels, x_0 is clipped with its base, and the
    # known entries are replaced
    from mofusion.fast import EditMode

    shape = (2, 12, 16)
    runner = StepRunner(_editing_model(True), sampler, shape, torch.randn(2, 5, 8), mask, 2.5, Acceleration(),
                        EditMode(model_input=True, replace=True, offset=True))  # fmt: skip
    runner.set_known(torch.rand(shape) < 0.5, torch.randn(shape), torch.zeros(shape), torch.randn(shape))
    with torch.no_grad(), _OpNames() as ops:
        runner._run_step()
    assert "aten.where.self_out" in ops.names
    assert not [name for name in ops.names if any(word in name for word in refused)]


def test_generate_refuses_an_unknown_acceleration(tmp_path) -> None:
    from mofusion.cli import main

    out = tmp_path / "x.bvh"
    code = main(["generate", "--text", "a person walks", "--out", str(out), "--acceleration", "fp8", "-q"])
    assert code == 2 and not out.exists()


def test_bf16_weights_compute_what_autocast_does() -> None:
    """The bf16 runner's copy holds bf16 convolution and linear weights, so its steps cast no
    weight; under autocast it computes exactly what the float32 model does, which stays float32."""
    from mofusion.fast import bf16_weights

    model = _model()
    copy = bf16_weights(model)
    assert (
        copy.input.weight.dtype == torch.bfloat16 and copy.down[0].attention.q.weight.dtype == torch.bfloat16
    )
    assert copy.down[0].blocks[0].norm1.weight.dtype == torch.float32  # normalisations keep float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x, t, cond = torch.randn(2, 12, 8), torch.tensor([5, 50]), torch.randn(2, 3, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        assert torch.equal(copy(x, t, cond), model(x, t, cond))
        # the sampling path too: x cast once for the convolutions that read it, guidance folded
        both = torch.cat((cond, torch.zeros_like(cond)))
        step = torch.tensor([1])
        guided = [
            m(x, None, cache=m.precompute(t, both, None, 4), step=step, copies=2, guidance=2.5)
            for m in (copy, model)
        ]
        assert torch.equal(*guided)


def test_bf16_runner_of_a_music_model() -> None:
    """A music model's condition encoder runs in float32 before the bf16 step, as in the eager loop."""
    model = _music_model()
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=50)), "ddpm", 5)
    music = torch.randn(2, 16, 5)
    exact = StepRunner(model, sampler, (2, 12, 16), music, None, 2.0, Acceleration()).run(make_generator(2))
    runner = StepRunner(model, sampler, (2, 12, 16), music, None, 2.0, Acceleration(bf16=True))
    half = runner.run(make_generator(2))
    assert 0 < float((half - exact).norm() / exact.norm()) < 0.05
    runner.set_condition(torch.randn(2, 16, 5), None)  # a new song through the float32 encoder
    assert torch.isfinite(runner.run(make_generator(2))).all()


def test_runner_owns_its_condition_buffers() -> None:
    """An expanded prompt (one prompt for many samples) and the caller's tensors stay untouched when
    a runner built from them is given another prompt."""
    model = _model()
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=20)), "ddpm", 4)
    for scale in (1.0, 2.0):
        cond = torch.randn(1, 5, 8).expand(3, -1, -1)
        mask = torch.ones(3, 5, dtype=torch.bool)
        kept = cond.clone()
        runner = StepRunner(model, sampler, (3, 12, 8), cond, mask, scale, Acceleration())
        other = torch.randn(3, 5, 8)
        runner.set_condition(other, mask)
        assert torch.equal(cond, kept)
        expected = _eager(model, sampler, (3, 12, 8), other, mask, scale, seed=4)
        assert torch.allclose(runner.run(make_generator(4)), expected, atol=1e-5)


def _editing_model(residual: bool) -> MotionUNet1D:
    """A small model trained with masks: the known values and their mask are input channels (and,
    ``residual``, it samples the residual to their interpolation)."""
    cfg = DenoiserConfig(feature_dim=12, channels=[16, 32], blocks_per_stage=1, time_dim=32, cond_dim=8,
                         heads=2, mask_conditioning=True, interpolation_residual=residual)  # fmt: skip
    return _perturbed(cfg)


@pytest.mark.parametrize(
    ("method", "residual", "kind", "scale", "prediction"),
    [
        ("replace", False, "ddpm", 2.5, "epsilon"),  # a plain model: MoFusion's in-painting
        ("replace", False, "ddim", 1.0, "epsilon"),
        ("condition", False, "ddpm", 2.5, "epsilon"),
        ("both", False, "ddpm", 2.5, "sample"),
        ("both", False, "dpm-sde", 2.5, "epsilon"),  # multistep: the previous estimate is unreplaced
        ("both", True, "ddpm", 2.5, "sample"),  # the packaged editing model's kind: clipped with its base
        ("condition", True, "ddim", 1.0, "epsilon"),
    ],
)
def test_step_runner_edits_as_the_eager_loop(
    method: str, residual: bool, kind: str, scale: float, prediction: str
) -> None:
    """Known frames held by the runner's step give the eager loop's samples for the same seed: its
    replacement draws sample_loop's noise in sample_loop's order, the model reads the same known
    channels, and a residual model clips base + residual. A second edit through the same runner
    gives that edit's samples."""
    from mofusion.editing import interpolate_known
    from mofusion.fast import EditMode

    model = _model() if method == "replace" else _editing_model(residual)
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=100, prediction=prediction)), kind, 8,
                           0.0, torch.full((12,), 1.5))  # fmt: skip
    shape = (2, 12, 16)
    cond, cond_mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    torch.manual_seed(5)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[:, :, :4] = True  # a known prefix
    mask[1, :, 12:] = True  # and, in the second sample, known ends
    mask[0, :3, 8] = True  # and a few channels of one frame
    conditions, replaces = method in ("condition", "both"), method in ("replace", "both")
    edit = EditMode(model_input=conditions, replace=replaces, offset=residual)
    runner = StepRunner(model, sampler, shape, cond, cond_mask, scale, Acceleration(), edit)
    samples = []
    for seed in (11, 12):
        known = torch.where(mask, torch.randn(shape), torch.zeros(()))
        value, pasted, offset = known, known, None
        if residual:  # as the pipeline does: the model sees the interpolation, known residuals are zero
            offset = interpolate_known(known, mask)
            value, pasted = offset, torch.zeros(shape)
        sampler.clip_offset = offset
        value, pasted = (value if conditions else None), (pasted if replaces else None)
        fn = guided(model, cond, cond_mask, scale, value, mask if conditions else None)
        with torch.no_grad():
            expected = sample_loop(fn, sampler, shape, make_generator(seed),
                                   replace_mask=mask if replaces else None, replace_value=pasted)  # fmt: skip
        runner.set_known(mask, value, pasted, offset)
        got = runner.run(make_generator(seed))
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
        if pasted is not None:  # the known entries come back as given
            assert torch.equal(got[mask], pasted[mask])
        samples.append(got)
    assert not torch.allclose(samples[0], samples[1])


def test_runner_edit_inputs_are_checked() -> None:
    from mofusion.fast import EditMode

    model = _editing_model(False)
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=50)), "ddpm", 4)
    mask = torch.ones(2, 12, 16, dtype=torch.bool)
    plain = StepRunner(model, sampler, (2, 12, 16), None, None, 1.0, Acceleration())
    with pytest.raises(MofusionError, match="without an edit"):
        plain.set_known(mask)
    runner = StepRunner(model, sampler, (2, 12, 16), None, None, 1.0, Acceleration(), EditMode(True, True))
    with pytest.raises(MofusionError, match="needs its value"):
        runner.set_known(mask, pasted=torch.zeros(2, 12, 16))
    with pytest.raises(MofusionError, match="shape"):
        runner.set_known(mask, torch.zeros(2, 12, 8), torch.zeros(2, 12, 8))
    with pytest.raises(MofusionError, match="sampling cache"):
        StepRunner(
            _Uncached(model), sampler, (2, 12, 16), None, None, 1.0, Acceleration(), EditMode(replace=True)
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graphed_edit_equals_the_eager_loop_on_gpu() -> None:
    """An in-painting edit of a residual model in a CUDA graph: the eager loop's samples, and a
    second edit through the same graph its own."""
    from mofusion.editing import interpolate_known
    from mofusion.fast import EditMode

    model = _editing_model(True).cuda()
    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=100, prediction="sample"), "cuda"), "ddpm",
                           8, 0.0, torch.full((12,), 1.5))  # fmt: skip
    shape = (2, 12, 16)
    runner = StepRunner(model, sampler, shape, None, None, 1.0, Acceleration(cuda_graph=True),
                        EditMode(model_input=True, replace=True, offset=True))  # fmt: skip
    assert runner.graph is not None
    for seed in (3, 4):
        torch.manual_seed(seed)
        mask = torch.rand(shape, device="cuda") < 0.4
        known = torch.where(mask, torch.randn(shape, device="cuda"), torch.zeros((), device="cuda"))
        base = interpolate_known(known, mask)
        sampler.clip_offset = base
        fn = guided(model, None, None, 1.0, base, mask)
        with torch.no_grad():
            expected = sample_loop(fn, sampler, shape, make_generator(seed, "cuda"), replace_mask=mask,
                                   replace_value=torch.zeros(shape, device="cuda"))  # fmt: skip
        runner.set_known(mask, base, torch.zeros(shape, device="cuda"), base)
        got = runner.run(make_generator(seed, "cuda"))
        # TF32 convolutions may pick other algorithms in and out of the graph: compare relatively
        assert float((got - expected).norm() / expected.norm()) < 1e-2


def test_pipeline_runners_follow_the_temperature() -> None:
    """A pipeline keeps one runner per sampling setup; a new temperature is a new setup (its step
    noise scales), not the runner built for the last one; so is another solver of the same class
    and steps (DPM-Solver++'s SDE form after its ODE form)."""
    from mofusion.checkpoint import default_checkpoint
    from mofusion.pipeline import MotionPipeline

    pipe = MotionPipeline.from_checkpoint(default_checkpoint(edit=True), "cpu")
    plain = MotionPipeline.from_checkpoint(default_checkpoint(edit=True), "cpu", "none")
    first = pipe.generate(1, 40, seed=0).features
    for p in (pipe, plain):
        p.config.sample.temperature = 1.0  # the packaged editing model's own is 0.15
    second = pipe.generate(1, 40, seed=0).features
    assert not torch.allclose(first, second, atol=1e-3)
    assert torch.allclose(second, plain.generate(1, 40, seed=0).features, atol=1e-4)
    pipe.generate(1, 40, seed=0, sampler="dpm", steps=10)
    sde = pipe.generate(1, 40, seed=0, sampler="dpm-sde", steps=10).features
    assert torch.allclose(sde, plain.generate(1, 40, seed=0, sampler="dpm-sde", steps=10).features, atol=1e-4)


def test_runners_of_one_pipeline_share_the_bf16_copies() -> None:
    """A pipeline's runners read one pair of bf16 copies of its model (not two per runner), and a
    runner on shared copies samples exactly as one that made its own; copies of another model are
    refused, and a model put in place of the pipeline's gets copies of its own."""
    from mofusion.checkpoint import default_checkpoint
    from mofusion.fast import ModelCopies
    from mofusion.pipeline import MotionPipeline

    pipe = MotionPipeline.from_checkpoint(default_checkpoint(edit=True), "cpu", "bf16-all")
    first = pipe.generate(1, 40, seed=0).features
    second = pipe.generate(2, 48, seed=0).features
    runners = list(pipe._runners.values())
    assert len(runners) == 2
    assert runners[0].model is runners[1].model and runners[0].table_model is runners[1].table_model
    assert runners[0].model is not pipe.model and next(runners[0].model.parameters()).dtype == torch.bfloat16
    assert first.shape[0] == 1 and second.shape[0] == 2

    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=100)), "ddpm", 10, 0.0, None)
    model, cond = _model(), torch.randn(2, 4, 8)
    every = Acceleration(bf16=True, bf16_all=True)
    copies = ModelCopies(model)
    shared = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, every, copies=copies)
    own = StepRunner(model, sampler, (2, 12, 16), cond, None, 2.0, every)
    assert shared.model is copies.step_model("bf16") and own.model is not shared.model
    assert torch.equal(shared.run(make_generator(1)), own.run(make_generator(1)))
    with pytest.raises(ValueError, match="own model"):
        StepRunner(_model(), sampler, (2, 12, 16), cond, None, 2.0, every, copies=copies)

    pipe.model = _model()
    pipe._runners.clear()
    before = pipe._model_copies
    pipe._runner(sampler, (2, 12, 16), cond, None, 2.0)
    assert pipe._model_copies is not before and pipe._model_copies.model is pipe.model
