"""Fast sampling: the reverse process as one fixed-shape step, run under bf16, torch.compile and a
CUDA graph where they pay.

A sampling loop of a small denoiser on a GPU is bound by kernel launches, not arithmetic: one step
of the default U-Net is about a hundred small operations, and launching them from Python costs more
than running them. :class:`StepRunner` therefore builds one step (guidance, the model, the sampler's
update) as a function of static buffers, with what depends on the step alone or the prompt alone
tabulated beforehand, guidance combined inside the model before its output layer and the sampler's
arithmetic folded into two linear maps (88 ATen operations per guided float32 step of the packaged
model, 154 before; bench/ab_revisions.py), optionally compiles it (fewer, fused kernels) and
captures it in a CUDA graph (one launch per step). The per-step values (diffusion step, the
sampler's coefficients) are looked up on the device from a step index, so one graph serves every
step.

The noise is drawn from the caller's generator in the same order as :func:`mofusion.diffusion.
sample_loop` draws it, so that the accelerated loop in float32 gives the eager loop's samples (up to
float rounding), and a seed means the same motion on either path.

Edits run in it too (:class:`EditMode`): the known values and their mask as the model's input
channels, the known entries of each new sample replaced by their noised values, a residual model's
estimate clipped with its base, all from buffers that :meth:`StepRunner.set_known` fills, so one
graph serves every edit of a shape (in-betweening, continuation, every window of a whole-song dance).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from copy import deepcopy
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .denoiser import ChannelsLastConv1d, channels_last_kernel
from .diffusion import Sampler, StepCoefficients, StepOutput
from .errors import MofusionError

_T = TypeVar("_T")


@dataclass(frozen=True)
class Acceleration:
    """How to run the sampling loop. ``runner``: the :class:`StepRunner`'s step in float32 (step
    and prompt tables built once, the sampler's arithmetic folded), nothing else; ``bf16``: autocast
    the denoiser to bfloat16; ``compile``: torch.compile the step (slow to start: tens of seconds,
    once per shape); ``cuda_graph``: capture the step in a CUDA graph (GPU only). Each of the last
    three runs the step runner too; none of them (``none``) runs the plain loop of
    :func:`mofusion.diffusion.sample_loop`."""

    runner: bool = False
    bf16: bool = False
    compile: bool = False
    cuda_graph: bool = False
    bf16_all: bool = False
    """With ``bf16``: the step's normalisations, softmax and elementwise operations in bfloat16
    too (the runner's model copy entirely in bfloat16, no autocast in the step). CUDA's autocast
    runs normalisations and softmax in float32 between bfloat16 convolutions, so each is cast up
    and back: casts took 5.9 of a bf16 step's 32.4 ms at batch 1024 on an H200, whose step ran 190
    operations with device time against the 89 that the CPU traces
    (bench/results/profile-step-cuda-h200.json). Measured since on an H200 (torch 2.11), it is the
    fastest setting from batch 4 on and as fast as float32 at batch 1, so the GPU default: a CUDA
    graph of the packaged model at batch 1 runs DDPM 50 in 33.6 ms against 34.9 in float32 and
    37.7 with autocast (in another run 36.1 against 35.7, bench/results/
    sample-cuda-h200-bf16-all-default.json); at batch 1024
    it makes 908 samples/s against 681 and 728 (bench/results/sample-cuda-h200-bf16-all.json), and
    its motions score as float32's do (FID and R-Precision paired against float32's, within
    their intervals: bench/results/sample-quality-cuda-bf16-all.json). ``bf16-all`` in
    :meth:`parse`. Needs a model with a sampling cache."""
    fused_norm: bool = False
    """Each group norm of the step and the SiLU after it as one Triton kernel on a GPU
    (:mod:`mofusion.kernels`): 16 norms and 11 SiLUs, 59 kernels of a guided step, become 16. On
    an H200 (torch 2.11) with the step all in bf16 and a CUDA graph, batch 1, DDPM 50 took
    28.1 ms against 33.7 (27.8 against 33.5 in a second run), and batch 1024 made 1073 samples/s
    against 906; paired on the same texts and seeds at DDPM 20, its motions score as the unfused
    step's do (R@1 +0.0004 ± 0.0042, FID 0.0000 ± 0.0001; bench/results/sample-cuda-h200-fused.json,
    sample-quality-cuda-fused.json). So part of the GPU default. ``fused`` in :meth:`parse`.
    Ignored under ``compile``, which fuses them itself."""
    channels_last: bool = False
    """The step's convolutions as channels-last 2-D convolutions and its activations laid out
    ``(B, T, C)`` in memory (:class:`mofusion.denoiser.ChannelsLastConv1d`), so that no convolution
    transposes its input and output. On 2 CPU cores, against the same step channels-first in one
    process: ``generate()`` 0.94 x the time, DDPM 50 at batch 1 0.95 x, 1.06 x the samples per
    second at batch 16, the features within 3.6e-6 (bench/results/ab-channels-last-cpu.json), and
    identical text-evaluator scores (sample-quality-cpu-channels-last.json): part of the CPU
    default. Not yet run on a GPU, so not part of its default. ``channels-last`` in :meth:`parse`.
    Needs a model with a sampling cache."""
    bf16_min_batch: int = 1
    """bf16 only from this batch on. With autocast, below batch 64 the casts cost more than they
    save (bench/results/sample-cuda-h200-graphed-condition.json); without them (``bf16_all``)
    bfloat16 is faster from batch 1, so the GPU default no longer sets it."""

    @property
    def any(self) -> bool:
        return self.runner or self.bf16 or self.compile or self.cuda_graph

    def for_batch(self, batch: int) -> Acceleration:
        """The settings for one batch size (bf16 resolved against :attr:`bf16_min_batch`)."""
        bf16 = self.bf16 and batch >= self.bf16_min_batch
        return replace(self, bf16=bf16, bf16_all=self.bf16_all and bf16, bf16_min_batch=1)

    @classmethod
    def parse(cls, text: str, device: torch.device) -> Acceleration:
        """``auto`` (the measured best for the device, see bench/sample.py), ``none``, or a
        ``+``-joined list of ``runner``, ``bf16``, ``bf16-all`` (bf16 without autocast in the step,
        see :attr:`bf16_all`), ``fused`` (see :attr:`fused_norm`), ``channels-last`` (see
        :attr:`channels_last`), ``compile``, ``graph``."""
        text = text.strip().lower()
        if text == "auto":
            return cls.default_for(device)
        if text in ("none", "", "eager"):
            return cls()
        parts = {part.strip() for part in text.split("+")}
        names = ("runner", "bf16", "bf16-all", "fused", "channels-last", "compile", "graph")
        known = ", ".join(names)
        if "" in parts:
            raise MofusionError(f"acceleration {text!r} has an empty part: join names with '+' ({known})")
        unknown = parts - set(names)
        if unknown:
            raise MofusionError(f"unknown acceleration {', '.join(sorted(unknown))} ({known})")
        if "graph" in parts and device.type != "cuda":
            raise MofusionError("CUDA graphs need a CUDA device")
        every = "bf16-all" in parts
        return cls(
            runner=True,
            bf16="bf16" in parts or every,
            compile="compile" in parts,
            cuda_graph="graph" in parts,
            bf16_all=every,
            fused_norm="fused" in parts,
            channels_last="channels-last" in parts,
        )

    @classmethod
    def default_for(cls, device: torch.device) -> Acceleration:
        """On a GPU: a CUDA graph of the step all in bfloat16 (the fastest from batch 4 on, as fast
        as float32 at batch 1, with float32's quality; see :attr:`bf16_all`) with its group norms
        fused (:attr:`fused_norm`: 0.83 x the time at batch 1), no compile (it takes 5-15 s per
        shape, more than a single generation saves; ask for it in a long-running process); on a
        CPU: the step runner in float32 (0.78 x the plain loop's time for a 10-s motion,
        bench/results/ab-sampling-cpu.json) with channels-last convolutions
        (:attr:`channels_last`). ``bf16-all`` is faster on a CPU with native bf16 (0.80 x on
        AVX512-BF16, bench/results/ab-bf16-all-cpu.json, same scores) but not the default there: a
        seed would then give other motions on CPUs without it, where bf16 was not measured."""
        if device.type == "cuda":
            return cls(runner=True, bf16=True, bf16_all=True, cuda_graph=True, fused_norm=True)
        # channels-last was measured on CPUs only: another device (Apple's MPS, say) keeps the runner
        return cls(runner=True, channels_last=device.type == "cpu")


@dataclass(frozen=True)
class EditMode:
    """How known values enter a :class:`StepRunner`'s step: the three parts of an edit that
    :func:`mofusion.diffusion.sample_loop` and :func:`mofusion.diffusion.guided` apply (see
    :mod:`mofusion.editing`). Each needs its buffers, which :meth:`StepRunner.set_known` fills."""

    model_input: bool = False
    """The model takes the known values and their mask as input channels (``condition``, ``both``)."""
    replace: bool = False
    """After each step the known entries of the new sample are replaced by ``q_sample`` of their
    values at the next step's noise level, and by the values themselves after the last step
    (``replace``, ``both``)."""
    offset: bool = False
    """The sample is a residual to a known base (an interpolation-residual model): the clean
    estimate is clipped as base + residual, as the sampler's ``clip_offset`` does."""


def capture_graph(fn: Callable[[], _T], warmup: int = 1) -> tuple[torch.cuda.CUDAGraph, _T]:
    """``fn`` captured as a CUDA graph, after ``warmup`` calls on a side stream (cuDNN and cuBLAS
    plans and workspaces, compilation: what must not happen inside a capture), and what the
    captured call returned: tensors in the graph's memory, rewritten by each replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def channels_last_convolutions(model: nn.Module) -> nn.Module:
    """``model`` (a copy: changed in place) with every ``nn.Conv1d`` replaced by its
    :class:`mofusion.denoiser.ChannelsLastConv1d`, for a channels-last step."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv1d):
                setattr(module, name, ChannelsLastConv1d(child))
    return model


def bf16_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose convolutions and linear maps hold bfloat16 weights (normalisations
    keep theirs). A CUDA graph needs autocast without its cast cache, so under autocast alone every
    step casts every weight again: two operations per convolution, 42 of a guided step's 134 for
    the packaged model. Autocast casts a weight by rounding it to bfloat16, as here, so the step
    computes the same values. The copy is made before the first step, by :class:`ModelCopies`."""
    copy = deepcopy(model)
    for module in copy.modules():
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            module.to(torch.bfloat16)
    return copy


class ModelCopies:
    """The reduced-precision copies of one model that step runners run, made once and shared.

    Every runner (one per shape, sampler and edit mode; a pipeline keeps up to 32 where graphs are
    captured) would otherwise hold its own two copies: 19.9 MB for the packaged model, 19 ms to make
    on 2 CPU cores. The runners only read them, so one pair serves them all, as long as ``model``'s
    weights are not changed afterwards (a new model needs new copies, as it needs new runners)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._made: dict[tuple[str, bool, bool], nn.Module] = {}

    def bf16_weights(self) -> nn.Module:
        """The model with bfloat16 convolutions and linear maps (:func:`bf16_weights`)."""
        return self.step_model("bf16-weights")

    def step_model(self, precision: str, fused: bool = False, channels_last: bool = False) -> nn.Module:
        """The model a step runs: ``precision`` ``float32`` (the model itself), ``bf16-weights`` or
        ``bf16`` (throughout); ``fused``: a copy of that one whose group norms run fused
        (:attr:`Acceleration.fused_norm`); ``channels_last``: one whose convolutions are
        channels-last (:attr:`Acceleration.channels_last`); each kept apart so that the others stay
        as they are."""
        if precision == "float32" and not fused and not channels_last:
            return self.model
        key = (precision, fused, channels_last)
        if key not in self._made:
            # each copy converted from the model itself: a fused copy is not made from an unfused
            # one, which the GPU default (fused, all in bf16) would otherwise build and keep unused
            if precision == "bf16-weights":
                copy = bf16_weights(self.model)
            elif precision == "bf16":
                copy = deepcopy(self.model).to(torch.bfloat16)
            elif precision == "float32":
                copy = deepcopy(self.model)
            else:
                raise ValueError(f"unknown precision {precision!r} (float32, bf16-weights, bf16)")
            if fused:
                for module in copy.modules():
                    if hasattr(type(module), "fused_norm"):
                        module.fused_norm = True  # type: ignore[assignment]
            if channels_last:
                channels_last_convolutions(copy)
            self._made[key] = copy
        return self._made[key]


class StepRunner:
    """One reverse step of a fixed shape, for any step index of one sampler.

    Args:
        model: the denoiser ``model(x, t, cond, cond_mask, drop_cond) -> eps`` (or ``-> x_0`` where
            the sampler's schedule says ``prediction`` is ``sample``).
        sampler: the DDPM/DDIM sampler (its steps and coefficients).
        shape: ``(B, C, T)`` of the samples.
        cond, cond_mask: condition tokens ``(B, L, D)`` and mask (None: unconditional).
        guidance_scale: classifier-free guidance; the conditional and null passes run as one batch
            of 2B whose doubled condition is built once here, not at every step.
        edit: how known values enter the step (None: nothing is known); :meth:`set_known` gives
            them before each :meth:`run`.
        copies: the model's bf16 copies, shared with other runners of the same model (None: this
            runner makes its own where it needs them).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        sampler: Sampler,
        shape: tuple[int, int, int],
        cond: Tensor | None,
        cond_mask: Tensor | None,
        guidance_scale: float,
        acceleration: Acceleration,
        edit: EditMode | None = None,
        copies: ModelCopies | None = None,
    ) -> None:
        device = sampler.schedule.device
        if acceleration.cuda_graph and device.type != "cuda":
            raise MofusionError("CUDA graphs need a CUDA device")
        if edit is not None and not hasattr(model, "precompute"):
            raise MofusionError("edits in the step runner need a model with a sampling cache")
        self.sampler = sampler
        self.acceleration = acceleration
        self.shape = shape
        b = shape[0]
        steps = len(sampler.timesteps)
        guided = cond is not None and guidance_scale != 1.0
        self.copies = 2 if guided else 1
        self.scale = float(guidance_scale)
        per_step = [sampler.coefficients(i) for i in range(steps)]
        self.coefficients = torch.tensor(
            [self._linear_step(c) for c in per_step], dtype=torch.float32, device=device
        )
        self.sigmas = [c.sigma for c in per_step]
        self.stochastic = any(sigma > 0 for sigma in self.sigmas)
        self.multistep = any(c.previous_x0_weight != 0 for c in per_step)
        self.t_table = torch.as_tensor(sampler.timesteps.copy(), dtype=torch.long, device=device)
        clip = sampler.clip
        self.bound = None if clip is None else clip.to(device, torch.float32).reshape(1, -1, 1)
        self.lower = None if self.bound is None else -self.bound
        self.has_mask = cond_mask is not None
        self.given_shape = None if cond is None else tuple(cond.shape[1:])
        if cond is not None:
            cond = cond.to(device)
            cond_mask = None if cond_mask is None else cond_mask.to(device)
        # the caller's condition as given, in buffers of the runner's own (set_condition copies a
        # new prompt into them, then refreshes everything made from it, as one graph on a GPU)
        own = torch.contiguous_format
        self.given_cond = None if cond is None else cond.clone(memory_format=own)
        self.given_mask = None if cond_mask is None else cond_mask.clone(memory_format=own)
        if cond is not None and guided:
            cond = torch.cat((cond, cond))
            cond_mask = None if cond_mask is None else torch.cat((cond_mask, cond_mask))
        self.drop = (
            torch.cat((torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool))).to(device)
            if guided
            else None
        )
        prepare = getattr(model, "prepare_condition", None)
        if cond is not None and prepare is not None and hasattr(model, "precompute"):
            # the condition encoded and the null condition of the second half substituted, once
            with torch.no_grad():
                cond, cond_mask = prepare(cond, cond_mask, self.drop)
            if self.drop is not None and cond_mask is None:
                cond_mask = torch.ones(cond.shape[:2], dtype=torch.bool, device=device)
            self.drop = None
            self.prepared = True
        else:
            self.prepared = False
        # buffers of the runner's own: set_condition writes into them, so they must neither be the
        # caller's tensors nor broadcast views (an expanded prompt)
        self.cond = None if cond is None else cond.clone(memory_format=torch.contiguous_format)
        self.cond_mask = None if cond_mask is None else cond_mask.clone(memory_format=torch.contiguous_format)
        self.step_index = torch.zeros(1, dtype=torch.long, device=device)
        # static buffers: the graph reads and writes these and nothing else
        self.x = torch.zeros(shape, device=device)
        self.noise = torch.zeros(shape, device=device)
        self.x0 = torch.zeros(shape, device=device)
        self.edit = edit
        if edit is not None:
            # what is known (set_known copies each edit's values in), and per step the scales of
            # q_sample at the next kept step: (sqrt(alpha_bar), sqrt(1 - alpha_bar)), (1, 0) after
            # the last, where the known values themselves are pasted
            self.known_mask = torch.zeros(shape, dtype=torch.bool, device=device)
            self.known_value = torch.zeros(shape, device=device)
            self.pasted = torch.zeros(shape, device=device)
            self.offset = torch.zeros(shape, device=device)
            self.replace_noise = torch.zeros(shape, device=device)
            schedule = sampler.schedule
            following = [int(t) for t in sampler.timesteps[1:]]
            self.q_table = torch.tensor(
                [
                    *((float(schedule.sqrt_alpha_bar[t]), float(schedule.sqrt_one_minus_alpha_bar[t]))
                      for t in following),
                    (1.0, 0.0),
                ],
                dtype=torch.float32,
                device=device,
            )  # fmt: skip
        # the condition is prepared (encoded) in float32, as the eager loop does, by the model as given
        self.prepare = prepare
        self.all_bf16 = acceleration.bf16 and acceleration.bf16_all
        if self.all_bf16 and not hasattr(model, "precompute"):
            raise MofusionError("bf16-all needs a model with a sampling cache (this one: use bf16)")
        if acceleration.channels_last and not hasattr(model, "precompute"):
            raise MofusionError("channels-last needs a model with a sampling cache")
        # the step and prompt tables are made by a copy with bf16 weights under autocast (the
        # normalisations of the prompt's keys in float32); with bf16-all the step runs a copy that
        # is bfloat16 throughout, without autocast
        if copies is None:
            copies = ModelCopies(model)
        elif copies.model is not model:
            raise ValueError("the copies given to a step runner must be of its own model")
        self.table_model = copies.bf16_weights() if acceleration.bf16 else model
        precision = "bf16" if self.all_bf16 else "bf16-weights" if acceleration.bf16 else "float32"
        self.model = copies.step_model(
            precision, acceleration.fused_norm and not acceleration.compile, acceleration.channels_last
        )
        model = self.table_model
        # the step-only and condition-only parts of the model (step embeddings, what each
        # cross-attention takes from the condition), once for the whole loop instead of at every step
        self.cache = None
        if hasattr(model, "precompute"):
            with torch.no_grad(), self._autocast():
                self.cache = model.precompute(self.t_table, self.cond, self.cond_mask, b * self.copies)
            if acceleration.channels_last:  # the folded upsampling kernels as channels-last 2-D ones
                self.cache.upsample = [channels_last_kernel(w) for w in self.cache.upsample]
        step: Callable[[], tuple[Tensor, Tensor]] = self._step
        if acceleration.compile:
            step = torch.compile(self._step, dynamic=False)
        self._compiled = step
        self.graph: Any = None
        self.condition_graph: Any = None
        if acceleration.cuda_graph:
            self._capture()

    def _autocast(self) -> Any:
        if self.acceleration.bf16:
            # no cast cache: a CUDA graph must not capture casts cached outside it (torch.cuda.graphs docs)
            return torch.autocast(device_type=self.x.device.type, dtype=torch.bfloat16, cache_enabled=False)
        return nullcontext()

    def _linear_step(self, c: StepCoefficients) -> tuple[float, ...]:
        """One step's arithmetic as two linear maps (see :meth:`_step`), in float64 before rounding.

        The sampler's step (:class:`StepCoefficients`) is linear in x_t and the network's outputs:
        ``x_0 = a x_t + b out_cond + c out_null`` (guidance ``out_null + s (out_cond - out_null)``
        and, for noise prediction, ``(x_t - sqrt(1 - ab) eps) / sqrt(ab)``), or ``a x_t + g out``
        with ``g = b + c`` where ``out`` is the guided output itself, then, after clipping,
        ``eps = (x_t - sqrt(ab) x_0) / sqrt(1 - ab)`` substituted into
        ``x_s = w_0 x_0 + w_t x_t + w_e eps + w_p x_0' + sigma z`` (``x_0'``: the previous step's
        estimate, for multistep solvers). Returns ``(a, b, c, g, x_0's weight, x_t's weight,
        x_0''s weight, sigma)``."""
        s = self.scale if self.copies == 2 else 1.0
        if self.sampler.schedule.prediction == "sample":
            x0_from = (0.0, s, 1.0 - s)
        else:
            x0_from = (
                1.0 / c.sqrt_ab,
                -c.sqrt_one_minus_ab * s / c.sqrt_ab,
                -c.sqrt_one_minus_ab * (1.0 - s) / c.sqrt_ab,
            )
        prev_from = (
            c.x0_weight - c.eps_weight * c.sqrt_ab / c.sqrt_one_minus_ab,
            c.xt_weight + c.eps_weight / c.sqrt_one_minus_ab,
            c.previous_x0_weight,
            c.sigma,
        )
        return (*x0_from, x0_from[1] + x0_from[2], *prev_from)

    def _step(self, in_place: bool = False) -> tuple[Tensor, Tensor]:
        """x at the next step and the x_0 estimate, from the static buffers: the model (which, with
        a sampling cache, returns the guided output itself), then five to seven elementwise operations
        (guidance, the sampler's update and the clipping folded into two linear maps by
        :meth:`_linear_step`) where they were nineteen. ``in_place``: the last operation of each
        map writes into the buffers ``x0`` and ``x`` (no copies after it; not under torch.compile,
        whose function must not write into its inputs)."""
        x = self.x
        edit = self.edit
        replaces = edit is not None and edit.replace
        # a multistep solver reads the previous x_0 from its buffer after the new one is made
        x0_into = self.x0 if in_place and not self.multistep else None
        x_into = self.x if in_place else None
        # with replacement, the sampler's update is not the last operation: the paste writes x
        update_into = None if replaces else x_into
        guided = self.cache is not None and self.copies == 2
        known = {}
        if edit is not None and edit.model_input:
            known = {"known": self.known_value, "known_mask": self.known_mask}
        # bf16-all: the model is bfloat16 throughout and casts x itself; its tables were made
        # under autocast (bfloat16 too), so nothing in the step is cast
        with nullcontext() if self.all_bf16 else self._autocast():
            if self.cache is not None:  # the model copies x itself where the condition starts to act
                out = self.model(
                    x,
                    None,
                    cache=self.cache,
                    step=self.step_index,
                    copies=self.copies,
                    guidance=self.scale if guided else None,
                    **known,
                )
            else:
                both = torch.cat((x, x)) if self.copies == 2 else x
                t = torch.index_select(self.t_table, 0, self.step_index).expand(x.shape[0])
                out = self.model(both, t.repeat(self.copies), self.cond, self.cond_mask, self.drop)
        c = torch.index_select(self.coefficients, 0, self.step_index)[0]
        if self.copies == 2 and not guided:
            terms = list(zip(out.chunk(2), (c[1], c[2]), strict=True))
        else:  # the guided output, or the only one
            terms = [(out, c[3])]
        if self.sampler.schedule.prediction == "sample":
            (first, weight), *terms = terms
            x0 = first.float() * weight  # a bf16 output times a 0-dim coefficient would stay bf16
        else:
            x0 = x * c[0]
        for i, (term, weight) in enumerate(terms):
            last = i == len(terms) - 1 and self.bound is None
            x0 = torch.addcmul(x0, term, weight, out=x0_into if last else None)
        if self.bound is not None and edit is not None and edit.offset:
            # the motion, base + residual, is what the bound holds
            clipped = torch.clamp(x0 + self.offset, self.lower, self.bound)
            x0 = torch.sub(clipped, self.offset, out=x0_into)
        elif self.bound is not None:
            x0 = torch.clamp(x0, self.lower, self.bound, out=x0_into)
        elif x0_into is not None and x0 is not x0_into:
            x0 = x0_into.copy_(x0)
        # x_into may be x itself: an elementwise operation may write over its own input
        more = [(self.x0, c[6])] if self.multistep else []
        more += [(self.noise, c[7])] if self.stochastic else []
        prev = torch.addcmul(x0 * c[4], x, c[5], out=None if more else update_into)
        for i, (term, weight) in enumerate(more):
            prev = torch.addcmul(prev, term, weight, out=update_into if i == len(more) - 1 else None)
        if replaces:  # the known entries at the next step's noise level (their values after the last)
            q = torch.index_select(self.q_table, 0, self.step_index)[0]
            noised = torch.addcmul(self.pasted * q[0], self.replace_noise, q[1])
            prev = torch.where(self.known_mask, noised, prev, out=x_into)
        if in_place and self.multistep:
            x0 = self.x0.copy_(x0)
        return prev, x0

    def _run_step(self) -> None:
        if not self.acceleration.compile:
            self._step(in_place=True)
            return
        prev, x0 = self._compiled()
        self.x0.copy_(x0)
        self.x.copy_(prev)

    @torch.no_grad()
    def _capture(self) -> None:
        self.x.normal_()  # the warm-up steps run on finite values
        self.graph, _ = capture_graph(self._run_step, warmup=3)
        if self.given_cond is not None:
            # a new prompt's condition: hundreds of small operations (the condition prepared, each
            # cross-attention's keys and values), one replay instead of as many launches from Python
            self.condition_graph, _ = capture_graph(self._refresh_condition)

    def set_known(
        self,
        mask: Tensor,
        value: Tensor | None = None,
        pasted: Tensor | None = None,
        offset: Tensor | None = None,
    ) -> None:
        """What an edit knows, ``(B, C, T)`` each, normalised, for the next :meth:`run`s: ``mask``
        where it is known; ``value`` the model's known-values input (:attr:`EditMode.model_input`);
        ``pasted`` the values replacement holds the known entries at (:attr:`EditMode.replace`);
        ``offset`` the base a residual model's sample is relative to (:attr:`EditMode.offset`)."""
        if self.edit is None:
            raise MofusionError("this runner was built without an edit")
        needed = {
            "value": (value, self.edit.model_input, self.known_value),
            "pasted": (pasted, self.edit.replace, self.pasted),
            "offset": (offset, self.edit.offset, self.offset),
        }
        for name, (given, wanted, buffer) in needed.items():
            if wanted and given is None:
                raise MofusionError(f"this runner's edit needs its {name}")
            if given is not None and tuple(given.shape) != self.shape:
                raise MofusionError(f"{name} of shape {tuple(given.shape)}, this runner takes {self.shape}")
            if wanted and given is not None:
                buffer.copy_(given)
        if tuple(mask.shape) != self.shape:
            raise MofusionError(f"mask of shape {tuple(mask.shape)}, this runner takes {self.shape}")
        self.known_mask.copy_(mask)

    def set_condition(self, cond: Tensor | None, cond_mask: Tensor | None) -> None:
        """New condition tokens of the shape this runner was built for (a new prompt, same graph)."""
        if (cond is None) != (self.cond is None) or (cond_mask is not None) != self.has_mask:
            raise MofusionError("the condition does not match this runner's")
        if cond is None or self.given_cond is None:
            return
        expected = (self.shape[0], *self.given_shape)
        if tuple(cond.shape) != tuple(expected):
            raise MofusionError(f"condition of shape {tuple(cond.shape)}, this runner takes {expected}")
        self.given_cond.copy_(cond)
        if cond_mask is not None and self.given_mask is not None:
            self.given_mask.copy_(cond_mask)
        if self.condition_graph is not None:
            self.condition_graph.replay()
        else:
            self._refresh_condition()

    @torch.no_grad()
    def _refresh_condition(self) -> None:
        """Everything the runner makes from the given condition, written into its buffers: the
        doubled (guided) and prepared condition, and the prompt's part of the sampling cache."""
        assert self.given_cond is not None and self.cond is not None
        cond = self.given_cond.repeat(self.copies, 1, 1)
        cond_mask = None if self.given_mask is None else self.given_mask.repeat(self.copies, 1)
        if self.prepared:
            drop = None
            if self.copies == 2:
                drop = torch.arange(cond.shape[0], device=cond.device) >= cond.shape[0] // 2
            cond, prepared_mask = self.prepare(cond, cond_mask, drop)  # type: ignore[misc]
            cond_mask = prepared_mask
            if cond_mask is None and self.cond_mask is not None:
                cond_mask = torch.ones_like(self.cond_mask)
        self.cond.copy_(cond)
        if cond_mask is not None and self.cond_mask is not None:
            self.cond_mask.copy_(cond_mask)
        if self.cache is not None:  # the step tables stay; only the prompt's keys and values change
            with self._autocast():
                fresh = self.table_model.condition_prompt(self.cond, self.cond_mask)  # type: ignore[operator]
                bias = self.table_model.condition_bias(self.cond, self.cond_mask)  # type: ignore[operator]
            for held, new in zip(self.cache.prompt, fresh, strict=True):
                for old, value in zip(held, new, strict=True):
                    old.copy_(value)
            if self.cache.cond_bias is not None and bias is not None:
                self.cache.cond_bias.copy_(bias)

    @torch.no_grad()
    def run(
        self,
        generator: torch.Generator | None,
        x_T: Tensor | None = None,
        callback: Callable[[int, StepOutput], None] | None = None,
    ) -> Tensor:
        """The reverse process from ``x_T`` (drawn from ``generator`` when not given) to x_0.

        ``callback(index, output)`` sees the static buffers: clone what it keeps."""
        device = self.x.device
        replaces = self.edit is not None and self.edit.replace
        if x_T is None:
            x_T = torch.randn(self.shape, generator=generator, device=device)
        self.x.copy_(x_T)
        self.noise.zero_()
        self.x0.zero_()  # a multistep solver's first step weighs it by zero: no stale values
        for i, sigma in enumerate(self.sigmas):
            self.step_index.fill_(i)
            if sigma > 0:  # the eager samplers draw noise exactly where the step adds some
                torch.randn(self.shape, generator=generator, device=device, out=self.noise)
            if replaces and i + 1 < len(self.sigmas):  # then sample_loop's, for the known entries
                torch.randn(self.shape, generator=generator, device=device, out=self.replace_noise)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._run_step()
            if callback is not None:
                callback(i, StepOutput(self.x, self.x0))
        return self.x.clone()
