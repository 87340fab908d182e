"""A fused group norm (with its SiLU) for the sampling step on a GPU, in Triton.

At batch 1 a sampling step on a GPU is a chain of tiny kernels, and its time is their count more
than their arithmetic. PyTorch's CUDA group norm is three kernels (statistics, per-channel factors,
the normalisation) and the SiLU after it one more; 16 group norms and 11 SiLUs make 59 of a
guided step's kernels. :func:`group_norm_act` does each group norm and its activation in one
kernel: one program per (sample, group), which loads the group once, takes its mean and variance
in float32, and writes ``silu(gamma (x - mean) / std + beta)`` in the input's dtype and layout
(channels first, or ``(B, T, C)`` in memory as in a channels-last step, where a group is a few
channels of every frame). At large batch it passes over the activations twice (one read, one
write) where PyTorch passes five times (three reads, two writes).

Triton comes with PyTorch's CUDA wheels; without it, on a CPU, or for a group larger than
:data:`MAX_GROUP_ELEMENTS` (one program holds a whole group), the function computes the same with
``F.group_norm`` and ``F.silu``; so it does, with one warning, where the kernel fails to compile
or launch (an untried GPU). The step runner uses it on a GPU by default (``fused`` in
``--acceleration``; 0.83 x a batch-1 step's time on an H200); training and the plain loop never
do. ``TRITON_INTERPRET=1`` runs the kernel on a CPU, which is how the tests check it without a GPU.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import first_line

_FAILED: list[str] = []
"""Why the kernel could not run in this process, once it has failed (then the unfused path runs)."""

MAX_GROUP_ELEMENTS = 16384
"""Channels per group times frames that one program normalises (a 10-s motion's largest group is
7,200); above it the unfused path runs."""


@functools.cache
def _kernel() -> Any:
    """The Triton kernel, compiled on first use (None where Triton is not installed)."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def group_norm_act_kernel(  # type: ignore[no-untyped-def]
        x_ptr, weight_ptr, bias_ptr, out_ptr, group_size, frames, channels_per_group, groups, eps,
        sample_stride, SILU: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        program = tl.program_id(0)  # sample * groups + group
        group = program % groups
        offsets = tl.arange(0, BLOCK)
        inside = offsets < group_size
        if CHANNELS_LAST:  # (B, T, C) in memory: a group is channels_per_group channels of each frame
            channel_in_group = offsets % channels_per_group
            frame = offsets // channels_per_group
            channels = groups * channels_per_group
            where = frame * channels + group * channels_per_group + channel_in_group
        else:  # (B, C, T): a group is contiguous
            channel_in_group = offsets // frames
            where = group * group_size + offsets
        where = (program // groups).to(tl.int64) * sample_stride + where
        x = tl.load(x_ptr + where, mask=inside, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / group_size
        centred = tl.where(inside, x - mean, 0.0)
        variance = tl.sum(centred * centred, axis=0) / group_size
        rstd = 1.0 / tl.sqrt(variance + eps)
        channel = group * channels_per_group + channel_in_group
        weight = tl.load(weight_ptr + channel, mask=inside, other=0.0).to(tl.float32)
        bias = tl.load(bias_ptr + channel, mask=inside, other=0.0).to(tl.float32)
        y = centred * rstd * weight + bias
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(out_ptr + where, y.to(out_ptr.dtype.element_ty), mask=inside)

    return group_norm_act_kernel


def fused_available(x: Tensor) -> bool:
    """Whether :func:`group_norm_act` runs the fused kernel for tensors like ``x``."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return (x.is_cuda or interpreted) and not _FAILED and _kernel() is not None


def group_norm_act(
    x: Tensor,
    groups: int,
    weight: Tensor,
    bias: Tensor,
    eps: float,
    silu: bool,
    fused: bool = True,
) -> Tensor:
    """``silu(group_norm(x))`` (or the norm alone) of ``x (B, C, T)`` with per-channel ``weight`` and
    ``bias`` ``(C,)``: one kernel where :func:`fused_available` and ``fused``, else PyTorch's."""
    batch, channels, frames = x.shape
    group_size = (channels // groups) * frames
    if not fused or group_size > MAX_GROUP_ELEMENTS or not fused_available(x) or torch.is_grad_enabled():
        return _unfused(x, groups, weight, bias, eps, silu)
    channels_last = is_channels_last(x)
    if not channels_last:
        x = x.contiguous()
    out = torch.empty_like(x)  # in x's layout
    block = max(128, 1 << (group_size - 1).bit_length())
    try:
        _kernel()[(batch * groups,)](
            x, weight.contiguous(), bias.contiguous(), out, group_size, frames, channels // groups, groups,
            float(eps), x.stride(0), SILU=silu, CHANNELS_LAST=channels_last, BLOCK=block,
            num_warps=8 if block >= 4096 else 4,
        )  # fmt: skip
    except Exception as error:  # Triton's compiler or driver on an untried GPU: it is the GPU default,
        # so one warning and PyTorch's norm from then on, not a failed generation or a compiler's trace
        _FAILED.append(f"{type(error).__name__}: {first_line(error)[:200]}")
        warnings.warn(
            f"the fused group norm could not run here ({_FAILED[0]}); using PyTorch's group norm "
            "instead (leave 'fused' out of the acceleration to skip it)",
            RuntimeWarning,
            stacklevel=2,
        )
        return _unfused(x, groups, weight, bias, eps, silu)
    return out


def is_channels_last(x: Tensor) -> bool:
    """Whether ``x (B, C, T)`` lies in memory as ``(B, T, C)``: a channels-last step's layout (see
    :class:`mofusion.denoiser.ChannelsLastConv1d`). A tensor that is both (one channel or one
    frame) counts as not."""
    return x.dim() == 3 and not x.is_contiguous() and x.transpose(1, 2).is_contiguous()


def _unfused(x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float, silu: bool) -> Tensor:
    if is_channels_last(x):  # as (B, C, 1, T) channels-last, which PyTorch normalises in that layout
        out = F.group_norm(x.unsqueeze(2), groups, weight, bias, eps).squeeze(2)
    else:
        out = F.group_norm(x, groups, weight, bias, eps)
    return F.silu(out) if silu else out
