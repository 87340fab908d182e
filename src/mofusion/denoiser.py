"""MoFusion's denoiser: a 1-D convolutional U-Net over time with cross-attention to a condition.

Layout (Dabral et al. 2023, Fig. 2), for stage widths ``c_1 < c_2 < ... < c_S``::

    x (B, C, T) -> conv -> [ResBlock x n -> CrossAttention -> Downsample]  stages 1..S-1
                           [ResBlock x n -> CrossAttention]                  stage S (bottom)
                           [concat skip -> ResBlock x n -> CrossAttention -> Upsample] stages S-1..1
                -> GroupNorm -> SiLU -> conv (zero-initialised) -> + s(t) * W x -> eps or x_0 (B, C, T)

The last term is a full-width 1x1 convolution of the input, scaled per channel by the step: the
noise is full-rank, so without it a first stage narrower than the feature vector (128 channels for
257 features) caps the noise loss near (C - c_1) / C, about 0.5, at every step (measured).

Every ResBlock receives the diffusion step as a sinusoidal embedding (through an MLP) that scales
and shifts its normalised activations. Every cross-attention block lets each time step attend to the
condition tokens ``(B, L, D)``. When there is no condition (unconditional generation, or the dropped
condition of classifier-free guidance), the block attends to learned null tokens instead.

Music is a condition of another kind: a sequence of feature frames aligned with the motion frames.
A small learned encoder (standardisation, linear map, residual temporal convolutions) turns the raw
frames into tokens, and every head's attention logits get a penalty proportional to the distance in
frames between the motion step and the music frame (ALiBi, Press et al. 2022): convolutions carry
no absolute position, so without it nothing would tell a motion frame which music frame is its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DenoiserConfig
from .errors import MofusionError
from .kernels import group_norm_act, is_channels_last


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``(B, dim)`` of (possibly fractional) diffusion steps ``t (B,)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat((torch.cos(args), torch.sin(args)), dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def nearest_upsample_kernel(weight: Tensor) -> Tensor:
    """The kernel ``(in, out, 4)`` of a transposed convolution (stride 2, padding 1) that equals
    doubling a sequence by nearest neighbour and then convolving it with ``weight`` ``(out, in, 3)``
    (padding 1). Output frame 2i reads ``w0 h[i-1] + (w1 + w2) h[i]``, frame 2i + 1 reads
    ``(w0 + w1) h[i] + w2 h[i+1]``: two thirds of the multiply-adds, and the doubled copy of the
    activations is never written."""
    w0, w1, w2 = weight.unbind(dim=2)
    return torch.stack((w2, w1 + w2, w0 + w1, w0), dim=2).transpose(0, 1).contiguous()


def _as_autocast_would(weight: Tensor) -> Tensor:
    """``weight`` rounded as autocast rounds a convolution's weight where it is enabled, so that a
    kernel folded from it is the same whether the weights are float32 or already rounded (a bf16
    runner's copy, :func:`mofusion.fast.bf16_weights`)."""
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return weight.to(torch.get_autocast_dtype(device))
    return weight


def _cat(tensors: list[Tensor], dim: int) -> Tensor:
    """``torch.cat`` that keeps a channels-last layout (``torch.cat`` of 3-D tensors writes a
    contiguous result, which the next convolution would transpose back)."""
    if (
        not is_channels_last(tensors[0])
        or torch.compiler.is_compiling()  # a compiler picks its layouts
        or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))  # out= has no gradient
    ):
        return torch.cat(tensors, dim=dim)
    shape = list(tensors[0].shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    out = tensors[0].new_empty((shape[0], shape[2], shape[1])).transpose(1, 2)
    return torch.cat(tensors, dim=dim, out=out)


def _repeat_batch(x: Tensor, copies: int) -> Tensor:
    """``x.repeat(copies, 1, 1)`` in ``x``'s layout."""
    return _cat([x] * copies, dim=0) if copies > 1 else x


def channels_last_kernel(weight: Tensor) -> Tensor:
    """A 1-D (transposed) convolution's kernel ``(a, b, k)`` as the channels-last 2-D kernel
    ``(a, b, 1, k)`` that :class:`ChannelsLastConv1d` and a channels-last step's folded upsampling
    run."""
    return weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)


class ChannelsLastConv1d(nn.Module):
    """An ``nn.Conv1d`` run as a 2-D convolution over ``(B, C, 1, T)`` with its weight channels-last,
    for a sampling step's model copy (``channels-last`` in :class:`mofusion.fast.Acceleration`).

    cuDNN's and oneDNN's fast convolution kernels read and write channels-last (NHWC) tensors; given
    a channels-first ``(B, C, T)`` tensor they transpose it in and out around each convolution. With
    this module in place of every ``nn.Conv1d``, each convolution writes its output as ``(B, T, C)``
    in memory (still indexed ``(B, C, T)``), the group norms, activations, residual additions and
    joins of the step keep that layout, and only the step's input is transposed, once. The packaged
    model's convolutions alone took 0.73 x their channels-first time on an H200 at batch 1024
    (bench/results/profile-step-cuda-h200.json) and 0.80 x on 2 CPU cores at batch 1
    (profile-step-cpu-batch1-float32.json); whole steps on the CPU, 0.95 x (ab-channels-last-cpu.
    json). Same function, same parameters, up to the kernels' rounding."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        plain = conv.groups == 1 and conv.dilation == (1,) and conv.padding_mode == "zeros"
        if not plain or isinstance(conv.padding, str):
            raise ValueError("only plain convolutions (one group, no dilation, zero padding) convert")
        self.stride = conv.stride[0]
        self.padding = int(conv.padding[0])
        self.weight = nn.Parameter(
            channels_last_kernel(conv.weight.detach()), requires_grad=conv.weight.requires_grad
        )
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv2d(x.unsqueeze(2), self.weight, self.bias, (1, self.stride), (0, self.padding))
        return out.squeeze(2)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _norm(norm: nn.GroupNorm, x: Tensor, silu: bool, fused: bool) -> Tensor:
    """``norm(x)``, followed by SiLU if ``silu``; ``fused``: as one kernel on a GPU
    (:func:`mofusion.kernels.group_norm_act`), which only a sampling step's model copy asks for."""
    if fused or is_channels_last(x):  # group_norm_act keeps a channels-last layout
        return group_norm_act(x, norm.num_groups, norm.weight, norm.bias, norm.eps, silu, fused)
    return F.silu(norm(x)) if silu else norm(x)


class ResBlock1D(nn.Module):
    """GroupNorm -> SiLU -> conv, then the step embedding as scale and shift, -> GroupNorm -> SiLU ->
    dropout -> conv (zero-initialised), plus a residual (1x1 conv when widths differ)."""

    fused_norm = False
    """Each group norm and its SiLU as one GPU kernel (set on a step runner's copy, see
    :mod:`mofusion.kernels`)."""

    def __init__(
        self, in_ch: int, out_ch: int, time_dim: int, groups: int, kernel: int, dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel, padding=kernel // 2)
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_ch))
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv1d(out_ch, out_ch, kernel, padding=kernel // 2))
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def film(self, t_emb: Tensor) -> Tensor:
        """What this block takes from the step alone, ``(B, 2 * out_ch)`` (a sampling loop tabulates
        it once, see :meth:`MotionUNet1D.precompute`): the second normalisation's per-channel weight
        and bias with the step's scale and shift folded in. ``norm2(h) (1 + scale) + shift`` is a
        group norm whose affine is ``gamma (1 + scale)`` and ``beta (1 + scale) + shift``: one pass
        over the activations fewer at every step."""
        scale, shift = self.time(t_emb).chunk(2, dim=1)
        gain = 1 + scale
        weight, bias = self.norm2.weight * gain, torch.addcmul(shift, self.norm2.bias, gain)
        return torch.cat((weight, bias), dim=1).to(gain.dtype)  # a bf16 table stays bf16

    def forward(self, x: Tensor, t_emb: Tensor | None, film: Tensor | None = None) -> Tensor:
        """``film``: :meth:`film` of one step ``(1, 2 * out_ch)``, computed beforehand (None: from
        ``t_emb``)."""
        h = self.conv1(_norm(self.norm1, x, True, self.fused_norm))
        if film is None:
            assert t_emb is not None
            scale, shift = self.time(t_emb)[:, :, None].chunk(2, dim=1)
            # one fused multiply-add instead of a multiply and an add over the activations
            h = F.silu(torch.addcmul(shift, self.norm2(h), 1 + scale))
        else:
            weight, bias = film.view(2, -1)  # group_norm_act is PyTorch's own unless fused
            h = group_norm_act(h, self.norm2.num_groups, weight, bias, self.norm2.eps, True, self.fused_norm)
        h = self.conv2(self.dropout(h))
        return self.skip(x) + h


def alibi_slopes(heads: int) -> Tensor:
    """Per-head penalty per frame of distance: 1/2, 1/8, 1/32, ... (from a few frames to the window)."""
    return torch.tensor([2.0 ** -(2 * h + 1) for h in range(heads)])


class ConditionEncoder(nn.Module):
    """Raw condition frames ``(B, L, M)`` -> tokens ``(B, L, D)``: standardised with the training
    data's statistics (buffers, saved with the weights), mapped linearly, then two residual
    convolutions over time (each token sees +-4 frames of music: onsets are events in time)."""

    def __init__(self, in_dim: int, dim: int, groups: int, kernel: int = 5, layers: int = 2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.proj = nn.Linear(in_dim, dim)
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(groups, dim), nn.SiLU(), nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
            )
            for _ in range(layers)
        )

    def forward(self, frames: Tensor) -> Tensor:
        h = self.proj((frames - self.mean) / self.std).transpose(1, 2)
        for conv in self.convs:
            h = h + conv(h)
        return h.transpose(1, 2)


class CrossAttention1D(nn.Module):
    """Each time step of ``x (B, C, T)`` attends to condition tokens ``(B, L, D)``; residual, and the
    output projection starts at zero so a new block is the identity.

    ``aligned``: the tokens are frames aligned with the motion (music); step ``i`` of this stage
    (``stride`` motion frames each) attends with a penalty ``slope_h * |centre_i - j|`` to frame ``j``."""

    fused_norm = False  # the group norm as one GPU kernel (see ResBlock1D.fused_norm)

    def __init__(
        self, channels: int, cond_dim: int, heads: int, groups: int, aligned: bool = False, stride: int = 1
    ) -> None:
        super().__init__()
        self.heads = heads
        self.aligned = aligned
        self.stride = stride
        # on the module's device (not made on the CPU at each call): a CUDA graph cannot hold a
        # copy from pageable host memory; not saved (a constant of ``heads``)
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)
        self.norm = nn.GroupNorm(groups, channels)
        self.cond_norm = nn.LayerNorm(cond_dim)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(cond_dim, 2 * channels)
        self.out = _zero(nn.Linear(channels, channels))

    def keys_values(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``(B, heads, L, C / heads)`` of the condition tokens: they depend on the
        condition alone, so a sampling loop computes them once per prompt."""
        b, length, _ = cond.shape
        k, v = self.kv(self.cond_norm(cond)).chunk(2, dim=-1)  # (B, L, C)
        return tuple(  # type: ignore[return-value]
            z.reshape(b, length, self.heads, z.shape[-1] // self.heads).transpose(1, 2) for z in (k, v)
        )

    def prompt_tensors(self, cond: Tensor, cond_mask: Tensor | None) -> tuple[Tensor, ...]:
        """What this block computes from the condition alone, once per prompt for a sampling loop.

        Aligned frames (music): the keys, the values and the distance penalty for this stage's
        frames (the condition runs at the motion's frame rate, so the stage has ``L / stride``
        frames; :meth:`forward` makes it afresh for any other length). Tokens (text): the query
        projection, the keys, the scale and the mask folded into the logits' weights
        ``(B, H * L, C)`` and bias ``(B, H * L, 1)``, and the values, the output projection and its
        bias folded into ``(B, C, H * L)``, so that a step is
        ``x + values @ softmax(weights @ norm(x) + bias)`` (:meth:`forward` with ``prompt``): two
        matrix products instead of the query projection, the mask's conversion, the attention and
        the output projection. Exact, since ``q . k = (k W_q) . norm(x) + k . b_q``, and since each
        head's weights sum to one, so the output bias can ride on the values. For a short prompt it
        is also fewer FLOPs (H * L = 48 for 12 tokens against C * C for the query projection)."""
        k, v = self.keys_values(cond)  # (B, H, L, d)
        if self.aligned:
            mask = None if cond_mask is None else cond_mask[:, None, None, :]
            frames = k.shape[2]
            return k, v, self._distance_bias(max(1, frames // self.stride), frames, k.dtype, k.device, mask)
        b, heads, length, d = k.shape
        c = heads * d
        scale = d**-0.5
        weights = (k @ self.q.weight.view(heads, d, c)).mul(scale).reshape(b, heads * length, c)
        bias = (k @ self.q.bias.view(heads, d, 1)).mul(scale)  # (B, H, L, 1)
        if cond_mask is not None:
            bias = bias.masked_fill(~cond_mask[:, None, :, None], float("-inf"))
        values = self.out.weight.view(c, heads, d).transpose(0, 1) @ v.transpose(2, 3)  # (B, H, C, L)
        values = values.transpose(1, 2).reshape(b, c, heads * length)
        values = values + (self.out.bias / heads).to(values.dtype)[:, None]
        return weights, bias.reshape(b, heads * length, 1), values

    def forward(
        self,
        x: Tensor,
        cond: Tensor | None,
        cond_mask: Tensor | None,
        prompt: tuple[Tensor, ...] | None = None,
    ) -> Tensor:
        """``prompt``: :meth:`prompt_tensors` of the (prepared) condition, computed beforehand; it
        replaces ``cond`` (and, for tokens, ``cond_mask``)."""
        b, c, t = x.shape
        if prompt is not None and not self.aligned:
            weights, bias, values = prompt
            logits = torch.baddbmm(
                bias, weights, _norm(self.norm, x, False, self.fused_norm)
            )  # (B, H * L, T)
            probs = logits.view(b, self.heads, -1, t).softmax(dim=2).view(b, -1, t).to(values.dtype)
            if is_channels_last(x):  # the transposed product writes (B, T, C): the layout stays
                out = torch.baddbmm(x.transpose(1, 2), probs.transpose(1, 2), values.transpose(1, 2))
                return out.transpose(1, 2)
            return torch.baddbmm(x, values, probs)
        q = self.q(_norm(self.norm, x, False, self.fused_norm).transpose(1, 2))  # (B, T, C)
        if prompt is None:
            assert cond is not None
            prompt = self.keys_values(cond)
        k, v, *made = prompt
        q = q.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
        attn_mask = None if cond_mask is None else cond_mask[:, None, None, :]
        if self.aligned:
            if made and made[0].shape[-2] == t and made[0].dtype == q.dtype:
                attn_mask = made[0]  # the distance penalty, made once per prompt
            else:
                attn_mask = self._distance_bias(t, k.shape[2], q.dtype, q.device, attn_mask)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        h = self.out(h.transpose(1, 2).reshape(b, t, c))
        return x + h.transpose(1, 2)

    def _distance_bias(
        self, steps: int, frames: int, dtype: torch.dtype, device: torch.device, mask: Tensor | None
    ) -> Tensor:
        """``(1 or B, heads, steps, frames)`` additive logits: minus slope times distance in frames."""
        centre = (torch.arange(steps, device=device, dtype=torch.float32) + 0.5) * self.stride - 0.5
        distance = (centre[:, None] - torch.arange(frames, device=device, dtype=torch.float32)[None]).abs()
        bias = -self.slopes.to(device, torch.float32)[:, None, None] * distance[None]
        bias = bias[None].to(dtype)
        if mask is not None:
            bias = bias.masked_fill(~mask, float("-inf"))
        return bias


class Stage(nn.Module):
    """ResBlocks followed by a cross-attention block: one U-Net stage."""

    def __init__(self, in_ch: int, out_ch: int, cfg: DenoiserConfig, stride: int = 1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock1D(
                in_ch if i == 0 else out_ch, out_ch, cfg.time_dim, cfg.groups, cfg.kernel_size, cfg.dropout
            )
            for i in range(cfg.blocks_per_stage)
        )
        self.attention = CrossAttention1D(
            out_ch, cfg.cond_dim, cfg.heads, cfg.groups, aligned=cfg.cond_aligned, stride=stride
        )

    def forward(
        self,
        x: Tensor,
        t_emb: Tensor | None,
        cond: Tensor | None,
        cond_mask: Tensor | None,
        films: list[Tensor] | None = None,
        prompt: tuple[Tensor, ...] | None = None,
        copies: int = 1,
    ) -> Tensor:
        """``copies``: ``x`` is one of that many identical batches, which the condition tells apart
        from the cross-attention on (see :meth:`MotionUNet1D.forward`)."""
        for i, block in enumerate(self.blocks):
            x = block(x, t_emb, None if films is None else films[i])
        if copies > 1:
            x = _repeat_batch(x, copies)
        return self.attention(x, cond, cond_mask, prompt)


@dataclass
class SamplingCache:
    """What a forward pass computes from the diffusion step alone or from the condition alone, made
    once for a whole sampling loop by :meth:`MotionUNet1D.precompute`: each would otherwise be a
    small operation at every step, which a GPU runs in microseconds each but launches one by one."""

    time_table: Tensor
    """``(S, W)``: per sampling step, every ResBlock's second normalisation's weight and bias (the
    step's scale and shift folded in, :meth:`ResBlock1D.film`) and the input skip's scale."""
    widths: list[int]
    """How ``time_table``'s columns split into those parts (in forward order)."""
    prompt: list[tuple[Tensor, ...]]
    """Per stage (down stages, then up stages): its cross-attention's
    :meth:`CrossAttention1D.prompt_tensors` (folded tokens, or an aligned condition's keys, values
    and distance penalty)."""
    cond_mask: Tensor | None
    cond_bias: Tensor | None = None
    """``(B, c_1)``: the pooled condition's bias of the first stage (``cond_pooled`` models)."""
    upsample: list[Tensor] = field(default_factory=list)
    """Per upsampling: its nearest-neighbour doubling and convolution as one transposed
    convolution's kernel (:func:`nearest_upsample_kernel`; empty: doubled, then convolved)."""


class MotionUNet1D(nn.Module):
    """The denoiser ``eps = f(x_t, t, condition)`` (or ``x_0 = f(...)``: which one is the diffusion
    config's ``prediction``; the network is the same).

    Args (forward):
        x: ``(B, C, T)`` noisy normalised features; ``T`` a multiple of :attr:`length_multiple`.
        t: ``(B,)`` diffusion steps.
        cond: ``(B, L, D)`` condition tokens, or None for the null condition.
        cond_mask: ``(B, L)`` True where a token is real (None: all are).
        drop_cond: ``(B,)`` True where the condition is replaced by the null condition.
        known: ``(B, C, T)`` known normalised features (mask-conditioned models only; with
            ``interpolation_residual``, their interpolation, defined on every frame).
        known_mask: ``(B, C, T)`` True where ``known`` holds (None: nothing is known).
    """

    fused_norm = False  # the output's group norm and SiLU as one GPU kernel (see ResBlock1D.fused_norm)

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        if cfg.feature_dim <= 0:
            raise MofusionError("denoiser.feature_dim must be set from the data")
        self.config = cfg
        ch = cfg.channels
        self.time_mlp = nn.Sequential(
            nn.Linear(ch[0], cfg.time_dim), nn.SiLU(), nn.Linear(cfg.time_dim, cfg.time_dim)
        )
        self.null_cond = nn.Parameter(torch.randn(cfg.null_tokens, cfg.cond_dim) * 0.02)
        self.cond_encoder = (
            ConditionEncoder(cfg.cond_input_dim, cfg.cond_dim, cfg.groups) if cfg.cond_input_dim else None
        )
        self.cond_pool = _zero(nn.Linear(cfg.cond_dim, ch[0])) if cfg.cond_pooled else None
        in_channels = cfg.feature_dim * (3 if cfg.mask_conditioning else 1)
        self.input = nn.Conv1d(in_channels, ch[0], cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        previous = ch[0]
        for i, width in enumerate(ch):
            self.down.append(Stage(previous, width, cfg, stride=2**i))
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv1d(width, width, 3, stride=2, padding=1))
            previous = width
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(ch) - 1)):
            self.upsample.append(nn.Conv1d(previous, ch[i], 3, padding=1))
            self.up.append(Stage(2 * ch[i], ch[i], cfg, stride=2**i))
            previous = ch[i]
        self.output = nn.Sequential(
            nn.GroupNorm(cfg.groups, ch[0]),
            nn.SiLU(),
            _zero(nn.Conv1d(ch[0], cfg.feature_dim, cfg.kernel_size, padding=cfg.kernel_size // 2)),
        )
        # A full-width linear path from input to output, scaled per channel by the step: the noise to
        # predict is full-rank (one value per feature) while the first stage may be narrower than the
        # feature vector, which would otherwise cap how much of the noise can pass.
        # It starts as the identity (exact at the noisiest steps, where x_t is the noise).
        self.input_skip = nn.Conv1d(cfg.feature_dim, cfg.feature_dim, 1)
        self.input_skip_scale = _zero(nn.Linear(cfg.time_dim, cfg.feature_dim))
        with torch.no_grad():
            self.input_skip.weight.copy_(torch.eye(cfg.feature_dim)[:, :, None])
            self.input_skip.bias.zero_()
            self.input_skip_scale.bias.fill_(1.0)

    @property
    def length_multiple(self) -> int:
        """Sequence lengths must be multiples of this (the time axis halves between stages)."""
        return 2 ** (len(self.config.channels) - 1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def null_condition(self, batch: int) -> Tensor:
        return self.null_cond.unsqueeze(0).expand(batch, -1, -1)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        cond_mask: Tensor | None = None,
        drop_cond: Tensor | None = None,
        known: Tensor | None = None,
        known_mask: Tensor | None = None,
        cache: SamplingCache | None = None,
        step: Tensor | None = None,
        copies: int = 1,
        guidance: float | None = None,
    ) -> Tensor:
        """``cache`` (from :meth:`precompute`) with ``step`` ``(1,)``, the row of the sampling step in
        it, replaces ``t`` and the condition.

        ``copies`` (with ``cache`` only): the output is for ``copies`` batches of the same ``x`` and
        step, each with its rows of the cached condition (classifier-free guidance's conditional
        and null passes). Everything before the first cross-attention depends on neither, so it
        runs once: the input convolution, the first stage's ResBlocks and the input skip, 9 % of a
        guided step's FLOPs for the packaged model (bench/roofline.py).

        ``guidance`` (with ``copies=2``): the output is classifier-free guidance's
        ``out_null + guidance (out_cond - out_null)`` for the ``B`` rows of ``x``. The output layer
        after its activation is affine, the same for both copies, and the input skip is the same
        for both, so the two are combined before the output convolution: it and everything after
        it run on one copy."""
        b, _, length = x.shape
        if length % self.length_multiple:
            raise MofusionError(
                f"sequence length {length} is not a multiple of {self.length_multiple} (pad it first)"
            )
        if copies > 1 and cache is None:
            raise MofusionError("copies of the input need a sampling cache (precompute)")
        if guidance is not None and copies != 2:
            raise MofusionError("guidance combines the two copies of a guided pass (copies=2)")
        stages = [*self.down, *self.up]
        if cache is not None and step is not None:
            # bf16 weights (a runner's copy, fast.bf16_weights): x cast once for both convolutions
            # that read it, where autocast would cast it for each; a no-op for float32 weights
            x = x.to(self.input.weight.dtype)
            parts = list(torch.index_select(cache.time_table, 0, step).split(cache.widths, dim=1))
            skip_scale = parts.pop()
            t_emb, cond, cond_mask = None, None, cache.cond_mask
            cond_bias = cache.cond_bias
            prompt: list[tuple[Tensor, ...] | None] = list(cache.prompt)
            films: list[list[Tensor] | None] = []
            for stage in stages:
                films.append(parts[: len(stage.blocks)])
                parts = parts[len(stage.blocks) :]
        else:
            cond, cond_mask = self._condition(b, cond, cond_mask, drop_cond, x.dtype)
            t_emb = self.time_mlp(timestep_embedding(t, self.config.channels[0]).to(x.dtype))
            skip_scale = self.input_skip_scale(t_emb)
            prompt = [None] * len(stages)
            films = [None] * len(stages)
            cond_bias = self.condition_bias(cond, cond_mask)
        if self.config.mask_conditioning:
            if known_mask is None or known is None:
                known_mask = torch.zeros_like(x, dtype=torch.bool)
                known = torch.zeros_like(x)
            m = known_mask.to(x.dtype)
            # an interpolation-residual model takes the interpolation of the known values everywhere
            known = known.to(x.dtype) if self.config.interpolation_residual else known.to(x.dtype) * m
            h = self.input(torch.cat((x, known, m), dim=1))
        else:
            if known_mask is not None:
                raise MofusionError(
                    "this model was not trained to take known frames as input; use --method replace"
                )
            h = self.input(x)
        if cond_bias is not None:  # the condition acts from here on
            h = _repeat_batch(h, copies) + cond_bias[:, :, None].to(h.dtype)
            copies_left = 1
        else:
            copies_left = copies
        skips = []
        for i, stage in enumerate(self.down):
            h = stage(h, t_emb, cond, cond_mask, films[i], prompt[i], copies_left if i == 0 else 1)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        folded = cache.upsample if cache is not None and step is not None else []
        for j, (upsample, stage) in enumerate(zip(self.upsample, self.up, strict=True)):
            if folded and folded[j].dim() == 4:  # a channels-last step's (StepRunner makes them)
                h = F.conv_transpose2d(h.unsqueeze(2), folded[j], upsample.bias, (1, 2), (0, 1)).squeeze(2)
            elif folded:
                h = F.conv_transpose1d(h, folded[j], upsample.bias, stride=2, padding=1)
            else:
                h = upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            k = len(self.down) + j
            h = stage(_cat([h, skips.pop()], dim=1), t_emb, cond, cond_mask, films[k], prompt[k])
        norm, _, conv = self.output  # GroupNorm, SiLU, conv
        h = _norm(norm, h, True, self.fused_norm)
        if guidance is not None:
            conditional, null = h.chunk(2)
            h = torch.lerp(null, conditional, guidance)
            copies = 1
        out = conv(h)
        out = torch.addcmul(out.view(copies, b, *out.shape[1:]), skip_scale[:, :, None], self.input_skip(x))
        return out.view(copies * b, *out.shape[2:])

    def precompute(
        self, t: Tensor, cond: Tensor | None, cond_mask: Tensor | None, batch: int
    ) -> SamplingCache:
        """The step-only and condition-only parts of :meth:`forward` for the steps ``t (S,)`` of a
        sampling loop and a condition ``(batch, L, D)`` (None: the null condition) whose dropped
        rows are already replaced (see :meth:`prepare_condition`)."""
        t_emb = self.time_mlp(timestep_embedding(t, self.config.channels[0]))
        stages = [*self.down, *self.up]
        outs = [block.film(t_emb) for stage in stages for block in stage.blocks]
        outs.append(self.input_skip_scale(t_emb))
        if cond is None:
            cond, cond_mask = self.null_condition(batch), None
        prompt = self.condition_prompt(cond, cond_mask)
        bias = self.condition_bias(cond, cond_mask)
        upsample = [nearest_upsample_kernel(_as_autocast_would(conv.weight)) for conv in self.upsample]
        table = torch.cat(outs, dim=1)
        return SamplingCache(table, [o.shape[1] for o in outs], prompt, cond_mask, bias, upsample)

    def condition_bias(self, cond: Tensor, cond_mask: Tensor | None) -> Tensor | None:
        """The first stage's bias from the mean of the (prepared) condition tokens, ``(B, c_1)``;
        None unless the model pools its condition."""
        if self.cond_pool is None:
            return None
        if cond_mask is None:
            pooled = cond.mean(dim=1)
        else:
            weights = cond_mask.to(cond.dtype)[..., None]
            pooled = (cond * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.cond_pool(pooled)

    def condition_prompt(self, cond: Tensor, cond_mask: Tensor | None) -> list[tuple[Tensor, ...]]:
        """Every stage's :meth:`CrossAttention1D.prompt_tensors` of ``cond`` (down stages, then up):
        the part of :meth:`precompute` that changes with the prompt."""
        return [stage.attention.prompt_tensors(cond, cond_mask) for stage in [*self.down, *self.up]]

    def prepare_condition(
        self, cond: Tensor, cond_mask: Tensor | None, drop: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """The condition encoded (music) and with dropped rows already replaced by the null tokens:
        what ``forward`` builds from ``cond`` and ``drop_cond`` at every call, built once for a
        whole sampling loop (and without the host synchronisation that a CUDA graph cannot hold).
        :meth:`precompute` and :meth:`condition_prompt` take a condition prepared this way."""
        return self._condition(cond.shape[0], cond, cond_mask, drop, cond.dtype)

    def _condition(
        self, b: int, cond: Tensor | None, cond_mask: Tensor | None, drop: Tensor | None, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor | None]:
        null = self.null_condition(b).to(dtype)
        if cond is None:
            return null, None
        if self.cond_encoder is not None:
            if cond.shape[-1] != self.config.cond_input_dim:
                raise MofusionError(
                    f"condition frames are {cond.shape[-1]}-wide; "
                    f"this model takes {self.config.cond_input_dim}"
                )
            cond = self.cond_encoder(cond.to(self.cond_encoder.proj.weight.dtype))
        cond = cond.to(dtype)
        if drop is None:
            return cond, cond_mask
        if self.config.cond_aligned:
            # an aligned condition's null is the null token at every frame: the distance penalty
            # then weighs identical tokens, and the dropped rows read the null token alone
            null = self.null_cond[:1].to(dtype).expand(b, cond.shape[1], -1)
            drop = drop.to(torch.bool)
            return torch.where(drop[:, None, None], null, cond), cond_mask
        # the null tokens take part even when no row is dropped (zero gradient then): DDP needs
        # every parameter in every step, and a host check of drop.any() would stall the GPU
        # replace dropped rows by the null tokens (padded to the condition's length, masked)
        length = max(cond.shape[1], null.shape[1])
        cond = F.pad(cond, (0, 0, 0, length - cond.shape[1]))
        null = F.pad(null, (0, 0, 0, length - null.shape[1]))
        real = (
            torch.ones(cond.shape[:2], dtype=torch.bool, device=cond.device)
            if cond_mask is None
            else F.pad(cond_mask, (0, length - cond_mask.shape[1]))
        )
        null_mask = torch.zeros_like(real)
        null_mask[:, : self.null_cond.shape[0]].fill_(True)  # no host scalar tensor: graph-safe
        drop = drop.to(torch.bool)
        cond = torch.where(drop[:, None, None], null, cond)
        mask = torch.where(drop[:, None], null_mask, real)
        return cond, mask
