"""bench/train_layout.py: the swapped convolution is the convolution, with the same gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import train_layout  # noqa: E402


def test_swapped_convolution_has_the_convolutions_values_and_gradients() -> None:
    torch.manual_seed(0)
    for conv in (nn.Conv1d(6, 5, 5, padding=2), nn.Conv1d(6, 6, 3, stride=2, padding=1)):
        swapped = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        swapped.load_state_dict(conv.state_dict())
        swapped.__class__ = train_layout.SwappedConv1d
        assert swapped.state_dict().keys() == conv.state_dict().keys()  # checkpoints unchanged
        x = torch.randn(3, 6, 11)
        a, b = conv(x), swapped(x)
        assert torch.allclose(a, b, atol=1e-5)
        a.square().sum().backward()
        b.square().sum().backward()
        assert swapped.weight.grad is not None and conv.weight.grad is not None
        assert torch.allclose(swapped.weight.grad, conv.weight.grad, atol=1e-4)
