"""An MDM-sized transformer denoiser, the reference that bench/sample.py measures ours against.

Tevet et al. 2023 (MDM), as its text-to-motion model is configured: a transformer encoder of 8
layers, width 512, 4 heads, feed-forward 1024, GELU, dropout 0.1; the motion frames projected to the
width with sinusoidal positions; one extra token in front that carries the diffusion step (an MLP on
its sinusoidal embedding) plus the sentence vector of the text (here the mean of the condition
tokens, projected). Classifier-free guidance zeroes the text part, as MDM does. It takes the same
inputs as :class:`mofusion.denoiser.MotionUNet1D` so both run through the same sampler; its weights
are random (only its cost is measured).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mofusion.denoiser import timestep_embedding


class EncoderLayer(nn.Module):
    """nn.TransformerEncoderLayer's post-norm layer written out (its fused inference path hides
    its matrix products from torch.utils.flop_counter); attention through scaled_dot_product_attention."""

    def __init__(self, width: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        b, n, width = h.shape
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, width)
        h = self.norm1(h + self.dropout(self.out(a)))
        return self.norm2(h + self.dropout(self.ff(h)))


class MDMReference(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        cond_dim: int = 384,
        width: int = 512,
        layers: int = 8,
        heads: int = 4,
        ff: int = 1024,
        dropout: float = 0.1,
        max_frames: int = 2048,
    ) -> None:
        super().__init__()
        self.width = width
        self.input = nn.Linear(feature_dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.text = nn.Linear(cond_dim, width)
        self.encoder = nn.Sequential(*(EncoderLayer(width, heads, ff, dropout) for _ in range(layers)))
        self.output = nn.Linear(width, feature_dim)
        position = torch.arange(max_frames + 1, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
        table = torch.zeros(max_frames + 1, width)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.register_buffer("positions", table, persistent=False)

    @property
    def length_multiple(self) -> int:
        return 1

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        cond_mask: Tensor | None = None,
        drop_cond: Tensor | None = None,
    ) -> Tensor:
        b, _, length = x.shape
        token = self.time(timestep_embedding(t, self.width).to(x.dtype))
        if cond is not None:
            weights = (
                torch.ones(cond.shape[:2], device=x.device) if cond_mask is None else cond_mask.float()
            )[..., None]
            sentence = (cond * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            text = self.text(sentence.to(x.dtype))
            if drop_cond is not None:
                text = text * (~drop_cond.bool())[:, None].to(text.dtype)
            token = token + text
        frames = self.input(x.transpose(1, 2))
        h = torch.cat((token[:, None], frames), dim=1) + self.positions[: length + 1].to(frames.dtype)
        h = self.encoder(h)
        return self.output(h[:, 1:]).transpose(1, 2)
