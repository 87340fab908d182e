"""Training losses: the noise-prediction loss and MoFusion's kinematic losses.

``L = L_eps + alpha_bar_t * (w_s L_s + w_a L_a + w_m L_m)`` (Dabral et al. 2023, eq. 5), where the
kinematic terms run on joint positions decoded from the clean motion ``x0_hat`` recovered from the
predicted noise, and the weight ``alpha_bar_t`` is taken per sample at its own step: at high noise
``x0_hat`` is unreliable and the weight is near zero. A model with ``diffusion.prediction =
"sample"`` predicts ``x0_hat`` itself, and ``L_eps`` is then the squared error of ``x0_hat``.
``loss.block_weights`` makes ``L_eps`` a weighted mean over feature channels, by block.

- ``L_s`` (skeleton consistency): temporal variance of every bone length, averaged over bones;
- ``L_a`` (anatomical symmetry): squared difference between mirrored left/right bone lengths;
- ``L_m`` (motion): squared joint position error to the ground truth, by default in each frame's
  facing frame (``motion_space="local"``); in world space (``"global"``) the root trajectory is
  integrated over the window and its drift, metres after a few seconds, dominates every other term
  (measured: 20 times the bone-length term, and samples with worse bone-length consistency).

Every term is a per-sample mean over the frames in ``mask`` (padding contributes nothing) and is
returned per sample, so the trainer can log it per quartile of ``t``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import LossConfig
from .diffusion import NoiseSchedule
from .editing import interpolate_known
from .errors import ConfigError
from .representation import MotionRepresentation, Normalizer
from .skeleton import Skeleton


@dataclass
class LossTerms:
    """Per-sample loss terms ``(B,)``; ``total`` is what the optimiser minimises (its mean)."""

    total: Tensor
    eps_mse: Tensor
    """The denoising term: the squared error of the predicted noise, or of the predicted clean
    sample for a model with ``diffusion.prediction = "sample"`` (one key in the logs for both)."""
    bone_length: Tensor
    symmetry: Tensor
    motion: Tensor
    weight: Tensor

    @property
    def kinematic(self) -> Tensor:
        """The weighted kinematic part, ``total - eps_mse``."""
        return self.total - self.eps_mse

    def as_dict(self) -> dict[str, Tensor]:
        return {
            "loss": self.total,
            "eps_mse": self.eps_mse,
            "kinematic": self.kinematic,
            "bone_length": self.bone_length,
            "symmetry": self.symmetry,
            "motion": self.motion,
        }


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over all but the batch dimension of ``values (B, T, ...)`` where ``mask (B, T)`` is True."""
    m = mask.to(values.dtype).reshape(mask.shape + (1,) * (values.ndim - 2))
    m = m.expand_as(values)
    dims = tuple(range(1, values.ndim))
    return (values * m).sum(dims) / m.sum(dims).clamp_min(1.0)


def bone_lengths(positions: Tensor, skeleton: Skeleton) -> Tensor:
    """``(..., J - 1)`` lengths of the bone ending at each non-root joint."""
    parents = list(skeleton.parents[1:])
    return (positions[..., 1:, :] - positions[..., parents, :]).norm(dim=-1)


def bone_length_variance(positions: Tensor, mask: Tensor, skeleton: Skeleton) -> Tensor:
    """L_s: per sample, the temporal variance of each bone length over valid frames, averaged over bones."""
    lengths = bone_lengths(positions, skeleton)  # (B, T, K)
    m = mask.to(lengths.dtype)[..., None]
    count = m.sum(1).clamp_min(1.0)
    mean = (lengths * m).sum(1) / count
    var = (((lengths - mean[:, None]) ** 2) * m).sum(1) / count
    return var.mean(-1)


def symmetry_loss(positions: Tensor, mask: Tensor, skeleton: Skeleton) -> Tensor:
    """L_a: per sample, mean squared difference of mirrored bone lengths over valid frames."""
    pairs = skeleton.mirror_bone_pairs()
    if not pairs:
        return positions.new_zeros(positions.shape[0])
    lengths = bone_lengths(positions, skeleton)
    left = torch.tensor([a - 1 for a, _ in pairs], device=positions.device)
    right = torch.tensor([b - 1 for _, b in pairs], device=positions.device)
    diff = lengths[..., left] - lengths[..., right]
    return masked_mean(diff**2, mask)


def motion_loss(positions: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """L_m: per sample, mean over valid frames and joints of the squared position error."""
    return masked_mean(((positions - target) ** 2).sum(-1), mask)


def block_weight_vector(representation: MotionRepresentation, block_weights: dict[str, float]) -> Tensor:
    """``(C,)`` weight of every feature channel: its block's entry in ``block_weights``, else 1."""
    weights = torch.ones(representation.dim)
    for block, weight in block_weights.items():
        weights[representation.slices[block]] = float(weight)
    if not bool(weights.sum() > 0):
        raise ConfigError("loss.block_weights leave no channel with a positive weight")
    return weights


@functools.lru_cache(maxsize=8)
def _relative_channel_weights(
    representation: MotionRepresentation, block_weights: tuple[tuple[str, float], ...], device: torch.device
) -> Tensor:
    """:func:`block_weight_vector` over its mean, on ``device``: built once per run, not per step."""
    weights = block_weight_vector(representation, dict(block_weights))
    return (weights / weights.mean()).to(device)


def diffusion_losses(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    x0: Tensor,
    mask: Tensor,
    t: Tensor,
    noise: Tensor,
    representation: MotionRepresentation,
    normalizer: Normalizer,
    cfg: LossConfig,
    cond: Tensor | None = None,
    cond_mask: Tensor | None = None,
    drop_cond: Tensor | None = None,
    known_mask: Tensor | None = None,
    interpolation_residual: bool = False,
) -> LossTerms:
    """All loss terms of one batch.

    Args:
        model: the denoiser, called as ``model(x_t, t, cond, cond_mask, drop_cond)`` on ``(B, C, T)``.
        schedule: the forward process and what the model predicts (noise or clean sample).
        x0: ``(B, T, C)`` clean normalised features.
        mask: ``(B, T)`` True on real frames.
        t: ``(B,)`` diffusion steps.
        noise: ``(B, T, C)`` Gaussian noise.
        representation, normalizer: to decode features into joint positions.
        cfg: loss weights.
        known_mask: ``(B, T, C)`` for mask-conditioned models: the channels given to the model as
            known (their clean values come from ``x0``).
        interpolation_residual: the model diffuses ``x0`` minus the interpolation of its known
            values (:func:`mofusion.editing.interpolate_known`), which is also its known-values input.
    """
    base = None
    if known_mask is not None and interpolation_residual:
        channels_first = interpolate_known(x0.transpose(1, 2), known_mask.transpose(1, 2))
        base = channels_first.transpose(1, 2)
    diffused = x0 if base is None else x0 - base  # what the diffusion runs on: the motion or its residual
    x_t = schedule.q_sample(diffused, t, noise)
    if known_mask is None:
        output = model(x_t.transpose(1, 2), t, cond, cond_mask, drop_cond)
    else:
        known = (x0 * known_mask if base is None else base).transpose(1, 2)
        output = model(x_t.transpose(1, 2), t, cond, cond_mask, drop_cond, known, known_mask.transpose(1, 2))
    output = output.transpose(1, 2).float()
    target = noise if schedule.prediction == "epsilon" else diffused.float()
    squared = (output - target) ** 2
    if cfg.block_weights:
        items = tuple(cfg.block_weights.items())
        squared = squared * _relative_channel_weights(representation, items, squared.device)
    eps_mse = masked_mean(squared, mask)
    zero = torch.zeros_like(eps_mse)
    weight = schedule.alpha_bar_at(t).float()
    if not cfg.kinematic:
        return LossTerms(eps_mse, eps_mse, zero, zero, zero, weight)

    with torch.autocast(device_type=x0.device.type, enabled=False):
        x0_hat = schedule.x0_from_output(output, x_t.float(), t)
        if base is not None:
            x0_hat = x0_hat + base.float()
        pred = normalizer.denormalize(x0_hat)
        true = normalizer.denormalize(x0.float())
        skeleton = representation.spec.skeleton
        pred_local = representation.local_positions(pred)
        l_s = bone_length_variance(pred_local, mask, skeleton)
        l_a = symmetry_loss(pred_local, mask, skeleton)
        if cfg.motion_space == "local":
            l_m = motion_loss(pred_local, representation.local_positions(true), mask)
        else:
            l_m = motion_loss(
                representation.decode_positions(pred), representation.decode_positions(true), mask
            )
        kinematic = cfg.bone_length_weight * l_s + cfg.symmetry_weight * l_a + cfg.motion_weight * l_m
        total = eps_mse + weight * kinematic
    return LossTerms(total, eps_mse, l_s, l_a, l_m, weight)
