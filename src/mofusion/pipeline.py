"""Inference: a trained denoiser, its noise schedule, feature layout and normaliser, glued thinly.

``MotionPipeline.from_checkpoint(path).generate(...)`` draws motions; nothing else (no data set) is
needed, because the checkpoint carries the configuration, the skeleton and the normaliser.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import Checkpoint, load_checkpoint
from .config import MofusionConfig
from .denoiser import MotionUNet1D
from .diffusion import NoiseSchedule, StepOutput, guided, make_generator, make_sampler, sample_loop
from .errors import CheckpointError, MofusionError
from .ik import fit_rotations
from .motion import Motion
from .representation import FeatureSpec, MotionRepresentation, Normalizer
from .rotations import matrix_to_quat
from .training import resolve_device

MAX_SECONDS = 600.0


@dataclass
class Generation:
    """Generated motions: denormalised ``features (N, T, C)`` and their decoded joint ``positions``."""

    features: Tensor
    positions: Tensor
    fps: float


class MotionPipeline:
    """Model + schedule + representation + normaliser, for generation."""

    def __init__(
        self,
        model: MotionUNet1D,
        config: MofusionConfig,
        spec: FeatureSpec,
        normalizer: Normalizer,
        file_scale: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.spec = spec
        self.representation = MotionRepresentation(spec)
        self.normalizer = Normalizer(normalizer.mean, normalizer.std, normalizer.bound).to(self.device)
        self.schedule = NoiseSchedule(config.diffusion, self.device)
        self.file_scale = file_scale

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> MotionPipeline:
        checkpoint = load_checkpoint(path)
        return cls.from_loaded(checkpoint, device)

    @classmethod
    def from_loaded(cls, checkpoint: Checkpoint, device: str = "auto") -> MotionPipeline:
        model = MotionUNet1D(checkpoint.config.denoiser)
        try:
            model.load_state_dict(checkpoint.weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"{checkpoint.path}: weights do not fit the configured model ({first})"
            ) from None
        return cls(
            model,
            checkpoint.config,
            checkpoint.spec,
            checkpoint.normalizer,
            checkpoint.file_scale,
            resolve_device(device),
        )

    @property
    def fps(self) -> float:
        return self.spec.fps

    def frames_for(self, seconds: float) -> int:
        """Feature frames for a duration (decoding gives one joint frame per feature frame)."""
        if not math.isfinite(seconds) or seconds <= 0:
            raise MofusionError(f"--seconds must be positive, got {seconds}")
        if seconds > MAX_SECONDS:
            raise MofusionError(
                f"--seconds {seconds} is more than the {MAX_SECONDS:.0f} s this model can draw at once"
            )
        return max(2, round(seconds * self.fps))

    @torch.no_grad()
    def generate(
        self,
        num_samples: int = 1,
        num_frames: int = 120,
        seed: int | None = 0,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        guidance_scale: float | None = None,
        cond: Tensor | None = None,
        cond_mask: Tensor | None = None,
        progress: bool = False,
        callback: Callable[[int, StepOutput], None] | None = None,
        batch_size: int = 64,
    ) -> Generation:
        """Draw ``num_samples`` motions of ``num_frames`` frames.

        The length is padded up to a multiple of the U-Net's downsampling factor and cropped back.
        Samples are drawn in batches of ``batch_size`` from one seeded generator: the same seed, batch
        size and device give the same motions.
        """
        if num_samples < 1:
            raise MofusionError("--num-samples must be at least 1")
        sample_cfg = self.config.sample
        kind = sampler or sample_cfg.sampler
        n_steps = steps or sample_cfg.steps
        multiple = self.model.length_multiple
        padded = math.ceil(num_frames / multiple) * multiple
        generator = make_generator(seed, self.device)
        clip = self.normalizer.bound if sample_cfg.clip_x0 else None
        diffusion_sampler = make_sampler(
            self.schedule, kind, n_steps, sample_cfg.eta if eta is None else eta, clip
        )
        scale = sample_cfg.guidance_scale if guidance_scale is None else guidance_scale
        outputs = []
        bar = tqdm(
            total=num_samples * len(diffusion_sampler.timesteps),
            desc="sampling",
            unit="step",
            disable=not progress,
        )
        for start in range(0, num_samples, batch_size):
            b = min(batch_size, num_samples - start)
            c = None if cond is None else cond[start : start + b].to(self.device)
            m = None if cond_mask is None else cond_mask[start : start + b].to(self.device)
            fn = guided(self.model, c, m, scale)

            def step_callback(index: int, out: StepOutput, b: int = b) -> None:
                bar.update(b)
                if callback is not None:
                    callback(index, out)

            x = sample_loop(
                fn, diffusion_sampler, (b, self.spec.dim, padded), generator, callback=step_callback
            )
            outputs.append(x)
        bar.close()
        normalised = torch.cat(outputs).transpose(1, 2)[:, :num_frames].float()
        features = self.normalizer.denormalize(normalised)
        if not torch.isfinite(features).all():
            raise MofusionError("generation produced non-finite values; the checkpoint may be damaged")
        positions = self.representation.decode_positions(features)
        return Generation(features.cpu(), positions.cpu(), self.fps)

    def to_motion(self, features: Tensor, ik: bool = True, iterations: int = 100) -> Motion:
        """A BVH-ready :class:`Motion` from one sample's features ``(T, C)``.

        With ``ik`` (the default) the decoded rotations are refined until forward kinematics
        reproduces the sample's joint positions (see :mod:`mofusion.ik`); without, they are used as
        the model predicted them.
        """
        if not ik:
            return self.representation.decode_motion(features)
        feats = features.detach().double().cpu()
        rotations, root = self.representation.decode_rotations(feats)
        targets = self.representation.decode_positions(feats)
        rotations, root = fit_rotations(self.spec.skeleton, rotations, root, targets, iterations=iterations)
        return Motion(self.spec.skeleton, matrix_to_quat(rotations).numpy(), root.numpy(), self.fps)
