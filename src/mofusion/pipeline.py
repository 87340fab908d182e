"""Inference: a trained denoiser, its noise schedule, feature layout and normaliser, glued thinly.

``MotionPipeline.from_checkpoint(path).generate(...)`` draws motions; nothing else (no data set) is
needed, because the checkpoint carries the configuration, the skeleton and the normaliser.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import Checkpoint, load_checkpoint
from .conditioning import PromptAnchors, read_prompts
from .config import MofusionConfig
from .denoiser import MotionUNet1D
from .diffusion import NoiseSchedule, StepOutput, guided, make_generator, make_sampler, sample_loop
from .editing import (
    ChannelTable,
    EditMethod,
    EditRequest,
    EditResult,
    align_trajectory,
    feature_mask,
    interpolate_known,
)
from .errors import CheckpointError, MofusionError, first_line
from .fast import Acceleration, EditMode, ModelCopies, StepRunner
from .ik import fit_rotations, rotations_from_positions, skeleton_from_positions
from .motion import Motion
from .representation import FeatureSpec, MotionRepresentation, Normalizer
from .rotations import matrix_to_quat
from .training import resolve_device

MAX_SECONDS = 600.0


def check_seconds(seconds: float) -> float:
    """A duration the models can draw at once, or one clear error."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise MofusionError(f"--seconds must be positive, got {seconds}")
    if seconds > MAX_SECONDS:
        raise MofusionError(
            f"--seconds {seconds} is more than the {MAX_SECONDS:.0f} s this model can draw at once"
        )
    return seconds


def _non_finite_cause(cond: Tensor | None, known: Tensor | None, known_mask: Tensor | None) -> str:
    """Why a generation came out non-finite: its inputs, where they were, else the weights."""
    if cond is not None and not torch.isfinite(cond).all():
        return "cond holds NaN or infinite values"
    if known is not None and known_mask is not None and not torch.isfinite(known[known_mask.bool()]).all():
        return "known holds NaN or infinite values where known_mask is set"
    return "generation produced non-finite values; the checkpoint may be damaged"


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
        acceleration: Acceleration | str = "auto",
        anchors: PromptAnchors | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.anchors = anchors
        self.acceleration = (
            Acceleration.parse(acceleration, self.device) if isinstance(acceleration, str) else acceleration
        )
        self._runners: dict[tuple[Any, ...], StepRunner] = {}
        if self.device.type == "cuda":
            # fixed shapes (one runner per shape): let cuDNN time its algorithms once per shape
            torch.backends.cudnn.benchmark = True
        self.model = model.to(self.device).eval()
        self._model_copies = ModelCopies(self.model)  # the runners' bf16 copies, one pair for all
        self.config = config
        self.spec = spec
        self.representation = MotionRepresentation(spec)
        self.normalizer = Normalizer(normalizer.mean, normalizer.std, normalizer.bound).to(self.device)
        self.schedule = NoiseSchedule(config.diffusion, self.device)
        self.file_scale = file_scale

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", acceleration: Acceleration | str = "auto"
    ) -> MotionPipeline:
        checkpoint = load_checkpoint(path)
        return cls.from_loaded(checkpoint, device, acceleration)

    @classmethod
    def from_loaded(
        cls, checkpoint: Checkpoint, device: str = "auto", acceleration: Acceleration | str = "auto"
    ) -> MotionPipeline:
        model = MotionUNet1D(checkpoint.config.denoiser)
        try:
            model.load_state_dict(checkpoint.weights)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{checkpoint.path}: weights do not fit the configured model ({first_line(exc)})"
            ) from None
        return cls(
            model,
            checkpoint.config,
            checkpoint.spec,
            checkpoint.normalizer,
            checkpoint.file_scale,
            resolve_device(device),
            acceleration,
            checkpoint.anchors,
        )

    @property
    def is_text_model(self) -> bool:
        return self.config.condition.kind == "text"

    @property
    def prompt_anchors(self) -> PromptAnchors | None:
        """The anchors prompts are read with (``sample.anchor_prompts`` on and anchors shipped)."""
        return self.anchors if self.config.sample.anchor_prompts else None

    def use_anchors(self, on: bool) -> None:
        """Switch prompt anchors on or off for this pipeline (on needs anchors in the checkpoint)."""
        if on and self.anchors is None:
            raise MofusionError(
                "this checkpoint has no prompt anchors (mofusion export --anchors DATA adds them)"
            )
        self.config.sample.anchor_prompts = on

    def text_condition(self, texts: Sequence[str], repeat: int = 1) -> tuple[Tensor, Tensor]:
        """Encoded prompts ``(tokens, mask)`` for :meth:`generate` (see :meth:`read_prompts`)."""
        tokens, mask, _ = self.read_prompts(texts, repeat)
        return tokens, mask

    def read_prompts(self, texts: Sequence[str], repeat: int = 1) -> tuple[Tensor, Tensor, list[str] | None]:
        """Encoded prompts ``(tokens, mask)`` for :meth:`generate` (checked: empty, too long, not
        UTF-8), each read with its anchor caption when :attr:`prompt_anchors` is set, and those
        captions (None when prompts are read alone); with ``repeat``, one prompt for that many
        samples."""
        if len(texts) == 0:  # (a NumPy array of texts has no truth value)
            raise MofusionError("no prompt given: pass at least one text")
        tokens, mask, read_with = read_prompts(self.config.condition, texts, self.device, self.prompt_anchors)
        if repeat > 1:
            if len(texts) != 1:
                raise MofusionError("repeat needs exactly one prompt")
            tokens, mask = tokens.expand(repeat, -1, -1), mask.expand(repeat, -1)
        return tokens, mask, read_with

    @property
    def fps(self) -> float:
        return self.spec.fps

    def _check_request(
        self,
        num_samples: int,
        num_frames: int,
        cond: Tensor | None,
        cond_mask: Tensor | None,
        known: Tensor | None,
        known_mask: Tensor | None,
    ) -> None:
        """One clear error for a :meth:`generate` call whose inputs do not fit together, before any
        work (they would otherwise fail deep in a convolution). Shapes only: a check of the values
        would wait for the device (a sync in the 15-ms path); non-finite inputs are named after
        sampling, when its result is not finite (:func:`_non_finite_cause`)."""
        most = int(MAX_SECONDS * self.fps)
        if not 1 <= num_frames <= most:
            raise MofusionError(
                f"num_frames must be between 1 and {most} ({MAX_SECONDS:.0f} s), got {num_frames}"
            )
        if cond is not None:
            if self.config.condition.kind == "none":
                raise MofusionError("this model is unconditional: it takes no cond")
            if cond.ndim != 3 or cond.shape[0] != num_samples:
                raise MofusionError(
                    f"cond must be (num_samples={num_samples}, length, width), got {tuple(cond.shape)}"
                )
            if cond_mask is not None and tuple(cond_mask.shape) != tuple(cond.shape[:2]):
                raise MofusionError(
                    f"cond_mask must be {tuple(cond.shape[:2])} like cond's first two sizes, "
                    f"got {tuple(cond_mask.shape)}"
                )
        elif cond_mask is not None:
            raise MofusionError("cond_mask was given without cond")
        expected = (num_samples, num_frames, self.spec.dim)
        for name, value in (("known", known), ("known_mask", known_mask)):
            if value is not None and tuple(value.shape) != expected:
                raise MofusionError(
                    f"{name} must be (samples, frames, features) = {expected}, got {tuple(value.shape)}"
                )
        if (known is None) != (known_mask is None):
            raise MofusionError("known and known_mask go together: give both or neither")

    @property
    def edit_method(self) -> EditMethod:
        """How this model keeps known frames by default: models trained with masks take them as
        input *and* have them pasted in at every step (``"both"``: the best of the three on the
        in-betweening benchmark, see bench/results/bandai2-inbetween); others only the latter."""
        return "both" if self.model.config.mask_conditioning else "replace"

    def frames_for(self, seconds: float) -> int:
        """Feature frames for a duration (decoding gives one joint frame per feature frame)."""
        return max(2, round(check_seconds(seconds) * self.fps))

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
        known: Tensor | None = None,
        known_mask: Tensor | None = None,
        method: EditMethod | None = None,
    ) -> Generation:
        """Draw ``num_samples`` motions of ``num_frames`` frames.

        The length is padded up to a multiple of the U-Net's downsampling factor and cropped back.
        Samples are drawn in batches of ``batch_size`` from one seeded generator: the same seed, batch
        size and device give the same motions.

        ``known (N, T, C)`` features (in data units) with ``known_mask (N, T, C)`` constrain the
        samples (see :mod:`mofusion.editing`); ``method`` is ``"replace"``, ``"condition"`` (models
        trained with masks) or ``"both"``, by default the model's own (:attr:`edit_method`).
        """
        if num_samples < 1:
            raise MofusionError("--num-samples must be at least 1")
        self._check_request(num_samples, num_frames, cond, cond_mask, known, known_mask)
        method = method or self.edit_method
        if (
            known_mask is not None
            and method in ("condition", "both")
            and not self.model.config.mask_conditioning
        ):
            raise MofusionError("this checkpoint was not trained with masks; use --method replace")
        if known_mask is not None and method == "replace" and self.model.config.interpolation_residual:
            raise MofusionError(
                "this model samples a residual to the interpolation of the known frames and needs them "
                "as input; use --method both or condition"
            )
        sample_cfg = self.config.sample
        kind = sample_cfg.sampler if sampler is None else sampler
        n_steps = sample_cfg.steps if steps is None else steps
        multiple = self.model.length_multiple
        padded = math.ceil(num_frames / multiple) * multiple
        generator = make_generator(seed, self.device)
        clip = self.normalizer.bound if sample_cfg.clip_x0 else None
        diffusion_sampler = make_sampler(
            self.schedule,
            kind,
            n_steps,
            sample_cfg.eta if eta is None else eta,
            clip,
            sample_cfg.temperature,
            sample_cfg.last_step,
        )
        scale = sample_cfg.guidance_scale if guidance_scale is None else guidance_scale
        outputs = []
        bar = tqdm(
            total=num_samples * len(diffusion_sampler.timesteps),
            desc="sampling",
            unit="step",
            disable=not progress,
        )
        if known_mask is not None and known is not None:
            pad = (0, 0, 0, padded - known_mask.shape[1])
            known_mask = torch.nn.functional.pad(known_mask.bool(), pad).transpose(1, 2).to(self.device)
            known = self.normalizer.normalize(torch.nn.functional.pad(known.float(), pad).to(self.device))
            known = torch.where(known_mask, known.transpose(1, 2), torch.zeros((), device=self.device))
        # an interpolation-residual model samples the residual to the interpolation of the known values
        residual = known_mask is not None and known is not None and self.model.config.interpolation_residual
        base = interpolate_known(known, known_mask) if residual else None
        for start in range(0, num_samples, batch_size):
            b = min(batch_size, num_samples - start)
            c = None if cond is None else cond[start : start + b].to(self.device)
            m = None if cond_mask is None else cond_mask[start : start + b].to(self.device)
            value = mask = offset = None
            if known_mask is not None and known is not None:
                value, mask = known[start : start + b], known_mask[start : start + b]
            pasted = value
            if base is not None:  # the model sees the interpolation; a known value's residual is zero
                offset = base[start : start + b]
                value, pasted = offset, torch.zeros_like(offset)
            diffusion_sampler.clip_offset = offset
            conditions = mask is not None and method in ("condition", "both")
            fn = guided(self.model, c, m, scale, value if conditions else None, mask if conditions else None)
            replaces = mask is not None and method in ("replace", "both")

            def step_callback(index: int, out: StepOutput, b: int = b) -> None:
                bar.update(b)
                if callback is not None:
                    callback(index, out)

            if self.acceleration.any:
                edit = None
                if mask is not None:
                    edit = EditMode(model_input=conditions, replace=replaces, offset=offset is not None)
                runner = self._runner(diffusion_sampler, (b, self.spec.dim, padded), c, m, scale, edit)
                if mask is not None:
                    given = value if conditions else None
                    runner.set_known(mask, given, pasted if replaces else None, offset)
                x = runner.run(generator, callback=step_callback)
                outputs.append(x if offset is None else x + offset)
                continue

            x = sample_loop(
                fn,
                diffusion_sampler,
                (b, self.spec.dim, padded),
                generator,
                callback=step_callback,
                replace_mask=mask if replaces else None,
                replace_value=pasted if replaces else None,
            )
            outputs.append(x if offset is None else x + offset)
        bar.close()
        normalised = torch.cat(outputs).transpose(1, 2)[:, :num_frames].float()
        features = self.normalizer.denormalize(normalised)
        if not torch.isfinite(features).all():
            raise MofusionError(_non_finite_cause(cond, known, known_mask))
        positions = self.positions(features)
        return Generation(features.cpu(), positions.cpu(), self.fps)

    def _runner(
        self,
        sampler: Any,
        shape: tuple[int, int, int],
        cond: Tensor | None,
        cond_mask: Tensor | None,
        scale: float,
        edit: EditMode | None = None,
    ) -> StepRunner:
        """An accelerated step for this shape and sampler, built once (captured graphs are reused
        for every later call of the same shape; the condition and an edit's known values are
        copied into them)."""
        # a runner tabulates the sampler's steps and their coefficients: the key holds them, not
        # the settings that make them (kind, eta, temperature: each of those was missed once)
        key = (
            tuple(int(t) for t in sampler.timesteps),
            tuple(astuple(sampler.coefficients(i)) for i in range(len(sampler.timesteps))),
            sampler.clip is not None,
            shape,
            None if cond is None else tuple(cond.shape),
            cond_mask is not None,
            scale,
            edit,
        )
        runner = self._runners.get(key)
        if runner is None:
            acceleration = self.acceleration.for_batch(shape[0])
            if edit is not None:
                # an edit's quality was measured in float32 only: bf16 stays out of its step
                acceleration = replace(acceleration, bf16=False, bf16_all=False)
            # each holds its own buffers and prompt tensors (about 100 MB at batch 128): keep many
            # only where building one is slow (a graph to capture, a step to compile); otherwise it
            # takes milliseconds
            if self._model_copies.model is not self.model:  # a model put in place of the first
                self._model_copies = ModelCopies(self.model)
            keep = 32 if acceleration.cuda_graph or acceleration.compile else 4
            while len(self._runners) >= keep:
                self._runners.pop(next(iter(self._runners)))
            runner = StepRunner(
                self.model, sampler, shape, cond, cond_mask, scale, acceleration, edit, self._model_copies
            )
            self._runners[key] = runner  # built for this condition: nothing to set
        else:
            runner.set_condition(cond, cond_mask)
        return runner

    @property
    def velocity_weight(self) -> float:
        """Weight of the velocity features against the position features when positions are
        consolidated: ``sample.velocity_weight`` times the squared ratio of their normalisation
        scales (so that 1 counts errors of the same size in the model's normalised output the same)."""
        std, slices = self.normalizer.std, self.spec.slices
        ratio = std[slices["local_positions"]].mean() / std[slices["velocities"]].mean()
        return self.config.sample.velocity_weight * float(ratio) ** 2

    def positions(self, features: Tensor, pinned: Tensor | None = None) -> Tensor:
        """Joint positions of generated features ``(..., T, C)`` in metres, consolidated with the
        velocity features (see ``sample.velocity_weight``)."""
        return self.representation.consolidated_positions(
            features, self.velocity_weight, pinned, self.config.sample.smoothing_weight
        )

    def to_motions(
        self, features: Tensor, ik: bool = True, iterations: int = 100, pinned: Tensor | None = None
    ) -> list[Motion]:
        """:meth:`to_motion` for a batch ``(B, T, C)``, with one IK fit for the whole batch
        (``pinned``: frames whose positions are known, see :meth:`positions`)."""
        feats = features.detach().double().cpu()
        skeleton = self.spec.skeleton
        targets = self.positions(feats, pinned) if ik or self.spec.rotation_source != "local" else None
        if self.spec.rotation_source != "local":
            # positions-only data (e.g. dance keypoints): rotations solved from the positions
            skeleton = skeleton_from_positions(skeleton, self.representation.local_positions(feats))
            rotations, root = rotations_from_positions(skeleton, targets)
        else:
            rotations, root = self.representation.decode_rotations(feats)
        if ik:
            rotations, root = fit_rotations(skeleton, rotations, root, targets, iterations=iterations)
        quats = matrix_to_quat(rotations).numpy()
        return [Motion(skeleton, q, r, self.fps) for q, r in zip(quats, root.numpy(), strict=True)]

    def to_motion(self, features: Tensor, ik: bool = True, iterations: int = 100) -> Motion:
        """A BVH-ready :class:`Motion` from one sample's features ``(T, C)``.

        With ``ik`` (the default) the decoded rotations are refined until forward kinematics
        reproduces the sample's joint positions (see :mod:`mofusion.ik`); without, they are used as
        the model predicted them.
        """
        if not ik and self.spec.rotation_source == "local":
            return self.representation.decode_motion(features)
        return self.to_motions(features[None], iterations=iterations)[0]

    # -- editing ---------------------------------------------------------------------------------
    def edit(
        self,
        requests: Sequence[EditRequest],
        seed: int | None = 0,
        method: EditMethod | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        progress: bool = False,
        ik: bool = True,
        text: str | None = None,
    ) -> list[EditResult]:
        """Fill in what each request leaves unknown (all requests of one call share ``num_frames``);
        a text model can be told what the new motion shows (``text``).

        Known frames and joints come back as given; generated frames are decoded, fitted by IK, and
        their root path is bent to meet the known frames (see :mod:`mofusion.editing`).
        """
        if not requests:
            return []
        num_frames = requests[0].num_frames
        if any(r.num_frames != num_frames for r in requests):
            raise MofusionError("edits of one call must have the same length")
        table = ChannelTable.of(self.spec)
        rotations = self.spec.slices["rotations"]
        knowns, masks = [], []
        for r in requests:
            features = self._input_features(r)
            known = torch.zeros(num_frames, self.spec.dim, dtype=torch.float32)
            known[: len(features)] = features
            joints = None if r.joints is None else torch.from_numpy(np.asarray(r.joints, dtype=bool))[None]
            mask = feature_mask(
                table, torch.from_numpy(r.frames)[None], joints, torch.tensor([r.trajectory])
            )[0]
            mask[r.input_frames :] = False
            mask[r.input_frames - 1, table.step] = False  # its step leads to a frame the input does not have
            if r.motion is None:
                mask[:, rotations] = False
            if not bool(mask.any()):
                raise MofusionError("nothing of the input is kept; use generate for a motion from scratch")
            knowns.append(known)
            masks.append(mask)
        cond = cond_mask = None
        if text is not None:
            cond, cond_mask = self.text_condition([text], repeat=len(requests))
        generation = self.generate(
            len(requests),
            num_frames,
            seed=seed,
            sampler=sampler,
            steps=steps,
            cond=cond,
            cond_mask=cond_mask,
            known=torch.stack(knowns),
            known_mask=torch.stack(masks),
            method=method,
            progress=progress,
        )
        pose = ~table.step  # a frame whose pose channels are all known keeps its decoded pose
        pinned = torch.stack([m[:, pose].all(dim=-1) for m in masks])
        motions = self.to_motions(generation.features, ik=ik, pinned=pinned)
        return [self._finish(r, m) for r, m in zip(requests, motions, strict=True)]

    def _input_features(self, request: EditRequest) -> Tensor:
        """Features of the input frames: the last frame is repeated so that every input frame has
        one (its step channels are never treated as known)."""
        assert request.positions is not None
        positions = np.concatenate([request.positions, request.positions[-1:]])
        if request.motion is not None:
            quats = request.motion.rotations
        else:
            quats = np.zeros(positions.shape[:2] + (4,))
            quats[..., 0] = 1.0
        quats = np.concatenate([quats, quats[-1:]])[: len(positions)]
        features = self.representation.encode(
            torch.from_numpy(positions).double(), torch.from_numpy(quats).double()
        )
        return features.float()

    def _finish(self, request: EditRequest, generated: Motion) -> EditResult:
        assert request.positions is not None
        aligned = align_trajectory(generated, request.positions, request.root_known, self.representation)
        rotations = aligned.rotations.copy()
        root = aligned.root_positions.copy()
        n_in = request.input_frames
        source = request.motion
        if source is not None:
            kept = np.flatnonzero(request.frames[:n_in])
            rotations[kept] = source.rotations[kept]
            root[kept] = source.root_positions[kept]
            if request.joints is not None:
                joints = np.flatnonzero(request.joints)
                rotations[:n_in, joints] = source.rotations[:, joints]
            if request.trajectory or (request.joints is not None and request.joints[0]):
                root[:n_in] = source.root_positions
        motion = Motion(self.spec.skeleton, rotations, root, self.fps)
        positions = motion.positions()
        if source is None:
            kept = np.flatnonzero(request.frames[:n_in])
            positions[kept] = request.positions[kept]
        return EditResult(motion, positions)
