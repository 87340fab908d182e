"""The training loop: AdamW, EMA, gradient clipping, bf16 autocast on GPU, validation, checkpoints.

Determinism: every random draw of step ``k`` (the windows, ``t``, the noise, condition dropout and
dropout masks) comes from generators seeded by ``(seed, k)``. A step therefore does not depend on the
history of random draws, and ``--resume`` needs only the step, the weights, the optimiser and the EMA
to continue exactly where a run stopped: 10 steps plus 10 resumed steps equal 20 straight steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._io import atomic_write_json
from .audio import AudioFeatureConfig
from .checkpoint import load_checkpoint, point_latest, prune_checkpoints, save_checkpoint
from .conditioning import CaptionBank, PromptAnchors
from .config import MofusionConfig
from .data.dataset import MotionDataset, WindowSampler, load_dataset
from .denoiser import MotionUNet1D
from .diffusion import NoiseSchedule
from .distributed import setup as setup_distributed
from .editing import ChannelTable, random_masks
from .errors import CheckpointError, MofusionError
from .losses import LossTerms, diffusion_losses
from .representation import MotionRepresentation, Normalizer, feature_mirror


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (``auto``: the GPU if there is one), or one clear error if this machine
    has no such device, rather than PyTorch's traceback at the first tensor put there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MofusionError(f"unknown device {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MofusionError("device cuda was asked for, but no CUDA GPU is available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise MofusionError(f"device {name} was asked for, but this machine has {count} CUDA GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise MofusionError("device mps was asked for, but Apple's MPS is not available here")
    elif device.type != "cpu":
        raise MofusionError(f"device {name!r} is not supported: use cpu, cuda, cuda:N, mps or auto")
    return device


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped :meth:`Trainer.fit` after a whole step, with a checkpoint of it."""


@contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """While training, SIGINT (Ctrl-C) and SIGTERM (a cluster's preemption, ``kill``) ask the loop to
    stop after the step in progress instead of interrupting it: an optimiser step cut short would
    leave weights half-updated, and what was trained since the last checkpoint would be lost. A
    second Ctrl-C interrupts at once. Python delivers signals to the main thread only, so elsewhere
    (and for a signal the process ignores, as under ``nohup``) nothing changes."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def ask_to_stop(signum: int, _: Any) -> None:
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, ask_to_stop)
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def step_seed(seed: int, step: int, stream: str) -> int:
    """A 63-bit seed for one random stream of one step."""
    digest = hashlib.sha256(f"{seed}:{step}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class EMA:
    """Exponential moving average of parameters, with the usual warm-up ``min(d, (1+k)/(10+k))``."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        state = model.state_dict()
        keys = [k for k, v in state.items() if v.is_floating_point()]
        shadow = [self.shadow[k] for k in keys]
        torch._foreach_mul_(shadow, d)
        torch._foreach_add_(shadow, [state[k].detach().float() for k in keys], alpha=1 - d)
        for k, v in state.items():
            if not v.is_floating_point():
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for k in self.shadow:
            self.shadow[k].copy_(state[k])


def learning_rate(step: int, base: float, warmup: int, decay_steps: int = 0) -> float:
    """1) linear warm-up over ``warmup`` steps; 2) with ``decay_steps``, cosine decay to a tenth of
    ``base`` at that step and constant after it; without, constant (as improved-diffusion and MDM).

    The rate never depends on ``max_steps``, so extending a run with ``--resume`` continues it
    exactly as if it had been started with the larger ``max_steps``.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    if decay_steps <= warmup:
        return base
    progress = min(1.0, (step - warmup) / (decay_steps - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path
    last_val: dict[str, float]


class Trainer:
    """Trains a denoiser on a :class:`MotionDataset`.

    Args:
        config: the full configuration (``config.data`` says where the data is).
        run_dir: where logs and checkpoints go.
        dataset: an already loaded data set (else loaded from ``config.data``).
        resume: a run or checkpoint to continue from (same data and skeleton).
        progress: show a progress bar.
        init_from: start a new run from these (EMA) weights; the skeleton and feature layout must
            match. Input channels that the source model lacks (mask conditioning) start at zero, so
            the new model begins as the source model.
        resume_changes: nested overrides of the resumed run's training loop (``max_steps`` and
            ``device`` always come from ``config``; see :func:`mofusion.config.resume_changes`).
    """

    def __init__(
        self,
        config: MofusionConfig,
        run_dir: str | Path,
        dataset: MotionDataset | None = None,
        resume: str | Path | None = None,
        progress: bool = True,
        cache: str | Path | None = None,
        init_from: str | Path | None = None,
        resume_changes: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        # under accelerate launch / torchrun: one process of several (each with its own device)
        self.dist = setup_distributed(config.train.device)
        self.progress = progress and self.dist.is_main
        self.device = self.dist.device or resolve_device(config.train.device)
        checkpoint = load_checkpoint(resume, with_train_state=True, map_location="cpu") if resume else None
        if checkpoint is not None:
            # the run keeps its own model, schedule, condition and data layout (frame rate, window,
            # music features): only where the data lies, which subsets, and the loop may change
            config = checkpoint.config.updated(
                {
                    "data": {"path": config.data.path, "subsets": list(config.data.subsets)},
                    "train": {"max_steps": config.train.max_steps, "device": config.train.device},
                }
            ).updated(resume_changes or {})
        if dataset is None:
            if not self.dist.is_main:
                self.dist.barrier()  # rank 0 processes the data and fills the cache first
            music = AudioFeatureConfig.of(config) if config.condition.kind == "music" else None
            dataset = load_dataset(
                config.data, cache, checkpoint.normalizer if checkpoint else None, self.progress, music
            )
            if self.dist.is_main:
                self.dist.barrier()
        self.dataset = dataset
        if checkpoint is not None:
            if (
                not checkpoint.spec.skeleton.same_topology(dataset.spec.skeleton)
                or checkpoint.spec.dim != dataset.spec.dim
            ):
                raise CheckpointError(
                    f"{checkpoint.path}: trained on another skeleton ({checkpoint.spec.skeleton.describe()}, "
                    f"{checkpoint.spec.dim} features) than the data ({dataset.spec.skeleton.describe()}, "
                    f"{dataset.spec.dim} features)"
                )
            self.dataset.normalizer = checkpoint.normalizer
        config = config.updated({"denoiser": {"feature_dim": dataset.spec.dim}})
        if config.condition.kind == "music":
            if dataset.collection.condition is None:
                raise MofusionError(
                    f"{config.data.path}: condition.kind is music but the data has no music "
                    "(music models train on dance-with-melody)"
                )
            width = dataset.collection.condition.shape[1]
            config = config.updated({"denoiser": {"cond_input_dim": width, "cond_aligned": True}})
        self.config = config
        self.representation = MotionRepresentation(dataset.spec)
        self.channel_table = ChannelTable.of(dataset.spec)
        self.normalizer = Normalizer(
            dataset.normalizer.mean, dataset.normalizer.std, dataset.normalizer.bound
        ).to(self.device)
        self.schedule = NoiseSchedule(config.diffusion, self.device)
        steps = self.schedule.num_steps
        if any(not 0 <= t < steps for t in config.train.focus_timesteps):
            raise MofusionError(f"train.focus_timesteps must lie in 0..{steps - 1}")
        self.focus_timesteps = torch.tensor(config.train.focus_timesteps, dtype=torch.long)
        torch.manual_seed(config.train.seed)
        self.model = MotionUNet1D(config.denoiser).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.train.lr,
            weight_decay=config.train.weight_decay,
            betas=(0.9, 0.999),
        )
        if self.model.cond_encoder is not None and checkpoint is None:
            # the music features' statistics over the training dances (kept with the weights)
            frames = torch.from_numpy(dataset.subset("train").condition)  # type: ignore[arg-type]
            self.model.cond_encoder.mean.copy_(frames.mean(0))
            self.model.cond_encoder.std.copy_(frames.std(0).clamp_min(1e-3))
        if init_from is not None and checkpoint is None:
            self._initialise_from(init_from)
        self.ema = EMA(self.model, config.train.ema_decay)
        self.step = 0
        if checkpoint is not None:
            state = checkpoint.train_state or {}
            try:
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.ema.load_state_dict(state["ema"])
                self.step = int(state["step"])
            except (KeyError, RuntimeError, ValueError) as exc:
                raise CheckpointError(
                    f"{checkpoint.path}: training state does not fit this model ({exc})"
                ) from None
        # the module that trains: DistributedDataParallel around the model when there are several
        # processes (it averages the gradients); the model itself otherwise
        self.train_model = self.dist.wrap(self.model)
        window = config.data.window
        multiple = self.model.length_multiple
        if window % multiple:
            raise MofusionError(f"data.window {window} must be a multiple of {multiple} for this U-Net")
        self.train_windows = dataset.sampler("train", window, self.device, config.train.class_balance)
        self.mirror = self._mirror_map() if config.train.mirror_prob > 0 else None
        self.val_windows: WindowSampler | None = None
        if dataset.split["val"]:
            self.val_windows = dataset.sampler("val", window, self.device)
        self.train_captions = self.val_captions = None
        self.anchors: PromptAnchors | None = None
        if config.condition.kind == "text":
            self.train_captions = self._caption_bank("train", cache)
            self.anchors = PromptAnchors.from_bank(self.train_captions)
            if self.train_captions.dim != config.denoiser.cond_dim:
                raise MofusionError(
                    f"denoiser.cond_dim is {config.denoiser.cond_dim} but the text encoder "
                    f"{config.condition.text_encoder!r} gives {self.train_captions.dim}-d tokens"
                )
            if self.val_windows is not None:
                self.val_captions = self._caption_bank("val", cache)
        self.use_bf16 = config.train.precision == "bf16" or (
            config.train.precision == "auto" and self.device.type == "cuda"
        )

    def _caption_bank(self, split: str, cache: str | Path | None) -> CaptionBank:
        part = self.dataset.subset(split)
        return CaptionBank(part.labels, part.names, self.config.condition, cache, "train", self.device)

    def _initialise_from(self, source: str | Path) -> None:
        donor = load_checkpoint(source)
        if not donor.spec.same_as(self.dataset.spec):
            raise CheckpointError(f"{donor.path}: its skeleton or feature layout differs from the data's")
        own = self.model.state_dict()
        weights = {}
        for name, value in donor.weights.items():
            if name not in own:
                raise CheckpointError(f"{donor.path}: parameter {name} does not exist in this model")
            target = own[name]
            if value.shape == target.shape:
                weights[name] = value
            elif (
                name == "input.weight"
                and value.shape[0] == target.shape[0]
                and value.shape[2:] == target.shape[2:]
            ):
                grown = torch.zeros_like(target)
                grown[:, : value.shape[1]] = value
                weights[name] = grown
            else:
                shapes = f"{tuple(value.shape)} there, {tuple(target.shape)} here"
                raise CheckpointError(f"{donor.path}: {name} does not fit ({shapes})")
        missing = set(own) - set(weights)
        if missing:
            raise CheckpointError(f"{donor.path}: lacks {', '.join(sorted(missing)[:3])}")
        self.model.load_state_dict(weights)

    # -- one step -------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.use_bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _losses(
        self,
        x0: Tensor,
        mask: Tensor,
        generator: torch.Generator,
        model: torch.nn.Module,
        noise_seed: int,
        condition: tuple[Tensor, Tensor] | None = None,
        drop: Tensor | None = None,
        shard: slice | None = None,
        focus: bool = True,
    ) -> tuple[LossTerms, Tensor]:
        """Loss terms of a batch; with ``shard``, every random draw is made for the whole (global)
        batch and the terms for this process's slice of it. ``focus=False`` draws the noise steps
        uniformly whatever ``train.focus_share`` says (validation, comparable across runs)."""
        batch = x0.shape[0]
        cond, cond_mask = condition if condition is not None else (None, None)
        known_mask = None
        if self.config.denoiser.mask_conditioning:
            known_mask = random_masks(
                self.channel_table,
                self.dataset.spec,
                batch,
                x0.shape[1],
                generator,
                self.config.train.mask_unconditional,
                self.config.train.mask_weights,
            ).to(self.device)
            known_mask = known_mask & mask[..., None]
        t = torch.randint(0, self.schedule.num_steps, (batch,), generator=generator)
        share = self.config.train.focus_share if focus else 0.0
        if share > 0:  # (no draw otherwise: runs without it keep their random stream)
            focused = torch.rand(batch, generator=generator) < share
            pick = torch.randint(0, len(self.focus_timesteps), (batch,), generator=generator)
            t = torch.where(focused, self.focus_timesteps[pick], t)
        t = t.to(self.device)
        # the noise is drawn where it is used: copying a batch of it from the host costs more than the step
        noise_generator = torch.Generator(device=self.device).manual_seed(noise_seed)
        noise = torch.randn(x0.shape, generator=noise_generator, device=self.device)
        if shard is not None:
            x0, mask, t, noise = x0[shard], mask[shard], t[shard], noise[shard]
            cond = None if cond is None else cond[shard]
            cond_mask = None if cond_mask is None else cond_mask[shard]
            drop = None if drop is None else drop[shard]
            known_mask = None if known_mask is None else known_mask[shard]
        with self._autocast():
            terms = diffusion_losses(
                model,
                self.schedule,
                x0,
                mask,
                t,
                noise,
                self.representation,
                self.normalizer,
                self.config.loss,
                cond=cond,
                cond_mask=cond_mask,
                drop_cond=drop,
                known_mask=known_mask,
                interpolation_residual=self.config.denoiser.interpolation_residual,
            )
        return terms, t

    def _mirror_map(self) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`feature_mirror` on normalised features: ``x[..., index] * scale + shift``."""
        if self.config.condition.kind == "text":
            raise MofusionError(
                "train.mirror_prob is for music or unconditional models: captions name sides "
                "('waves the left hand') that a mirrored window would contradict"
            )
        index, sign = feature_mirror(self.dataset.spec)
        mean, std = self.normalizer.mean, self.normalizer.std
        index_t = torch.as_tensor(index, device=self.device)
        sign_t = torch.as_tensor(sign, dtype=mean.dtype, device=self.device)
        return index_t, sign_t * std[index_t] / std, (sign_t * mean[index_t] - mean) / std

    def train_step(self) -> dict[str, Tensor]:
        """One optimiser step; returns detached per-batch statistics (device tensors, no host sync)."""
        cfg = self.config.train
        self.model.train()
        generator = torch.Generator().manual_seed(step_seed(cfg.seed, self.step, "data"))
        rank = self.dist.rank
        torch.manual_seed(step_seed(cfg.seed, self.step, "dropout" if rank == 0 else f"dropout{rank}"))
        # the global batch (every process draws the same), of which this process trains on its slice
        total = cfg.batch_size * self.dist.world_size
        batch = self.train_windows.sample(total, generator)
        x = batch.x
        if self.mirror is not None:  # augmentation: some windows become their mirror image
            index, scale, shift = self.mirror
            flip = (torch.rand(total, generator=generator) < cfg.mirror_prob).to(x.device)
            x = torch.where(flip[:, None, None], (x[..., index] * scale + shift) * batch.mask[..., None], x)
        condition = drop = None
        if self.train_captions is not None and batch.clip is not None:
            condition = self.train_captions.condition(self.train_captions.draw(batch.clip, generator))
        elif self.config.condition.kind == "music" and batch.cond is not None:
            condition = (batch.cond, None)  # type: ignore[assignment]
        if condition is not None:  # classifier-free guidance: some windows see the null condition
            drop = (torch.rand(total, generator=generator) < cfg.cond_drop_prob).to(self.device)
        terms, t = self._losses(
            x,
            batch.mask,
            generator,
            self.train_model,
            step_seed(cfg.seed, self.step, "noise"),
            condition,
            drop,
            self.dist.shard(cfg.batch_size) if self.dist.enabled else None,
        )
        loss = terms.total.mean()
        lr = learning_rate(self.step, cfg.lr, cfg.warmup_steps, cfg.lr_decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        record = {k: v.detach().mean() for k, v in terms.as_dict().items()}
        record["lr"] = torch.tensor(lr)
        record["grad_norm"] = grad_norm.detach()
        # the noise loss per quartile of t (improved-diffusion's most useful diagnostic), as sums and counts
        quartile = (t * 4 // self.schedule.num_steps).clamp_max(3)
        record["eps_mse_quartile_sum"] = torch.zeros(4, device=t.device).index_add_(
            0, quartile, terms.eps_mse.detach()
        )
        record["eps_mse_quartile_count"] = torch.bincount(quartile, minlength=4).float()
        return record

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss terms of the EMA model on fixed validation windows with fixed ``t`` and noise."""
        if self.val_windows is None:
            return {}
        model = MotionUNet1D(self.config.denoiser).to(self.device)
        model.load_state_dict(self.ema.state_dict())
        model.eval()
        fixed = self.val_windows.fixed()
        generator = torch.Generator().manual_seed(step_seed(self.config.train.seed, 0, "validation"))
        batch = self.config.train.batch_size * self.dist.world_size  # the global batch
        total = fixed.x.shape[0]
        if self.config.train.val_batches and total > batch * self.config.train.val_batches:
            # an evenly spread subset, so that every part of the split (every content label) counts
            keep = torch.linspace(0, total - 1, batch * self.config.train.val_batches).round().long()
            fixed = fixed.select(keep)
        sums: dict[str, float] = {}
        count = 0
        for i, start in enumerate(range(0, fixed.x.shape[0], batch)):
            x0, mask = fixed.x[start : start + batch], fixed.mask[start : start + batch]
            condition = None
            if self.val_captions is not None and fixed.clip is not None:
                condition = self.val_captions.condition(
                    self.val_captions.first(fixed.clip[start : start + batch])
                )
            elif self.config.condition.kind == "music" and fixed.cond is not None:
                condition = (fixed.cond[start : start + batch], None)  # type: ignore[assignment]
            terms, _ = self._losses(
                x0,
                mask,
                generator,
                model,
                step_seed(self.config.train.seed, i, "validation-noise"),
                condition,
                focus=False,
            )
            for k, v in terms.as_dict().items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            count += x0.shape[0]
        return {f"val_{k}": v / max(count, 1) for k, v in sums.items()}

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write a checkpoint, never one with non-finite weights (the previous one stays in place)."""
        if not all(torch.isfinite(v).all() for v in self.ema.state_dict().values() if v.is_floating_point()):
            raise MofusionError(
                f"step {self.step}: the weights are not finite; not saved (the last checkpoint is intact)"
            )
        target = self.run_dir / "checkpoints" / f"step-{self.step:08d}"
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
            "step": self.step,
        }
        save_checkpoint(
            target,
            self.config,
            self.dataset.spec,
            self.dataset.normalizer,
            self.ema.state_dict(),
            self.step,
            self.dataset.collection.file_scale,
            train_state=state,
            anchors=self.anchors,
        )
        point_latest(self.run_dir, target)
        prune_checkpoints(self.run_dir, self.config.train.keep_checkpoints)
        return target

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
        cfg = self.config.train
        main = self.dist.is_main  # only rank 0 writes logs and checkpoints
        log_path = self.run_dir / "metrics.jsonl"
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "config.json", self.config.to_dict())
            if self.dataset.split_path is not None:
                shutil.copyfile(self.dataset.split_path, self.run_dir / "split.json")
            else:  # a split that came with the data (HumanML3D's files, a music pack)
                atomic_write_json(self.run_dir / "split.json", self.dataset.split)
            if self.step == 0 and log_path.exists():
                log_path.unlink()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="training",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        window_frames = cfg.batch_size * self.dist.world_size * self.config.data.window
        last_val: dict[str, float] = {}
        checkpoint = self.run_dir
        accum: dict[str, Tensor] = {}
        accum_n = 0
        started = tick = time.perf_counter()
        deadline = started + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
        interrupted = False
        with _stop_requests() as stop_requested:
            while self.step < cfg.max_steps:
                record = self.train_step()
                for k, v in record.items():
                    accum[k] = accum[k] + v if k in accum else v
                accum_n += 1
                bar.update()
                out_of_time = time.perf_counter() > deadline
                if deadline < math.inf:  # every rank must stop at the same step
                    out_of_time = self.dist.any(out_of_time)
                interrupted = stop_requested.is_set()
                if self.dist.enabled:  # the ranks agree at log steps, where they synchronise anyway
                    interrupted = self.step % cfg.log_every == 0 and self.dist.any(interrupted)
                done = self.step >= cfg.max_steps or out_of_time or interrupted
                if self.step % cfg.log_every == 0 or done:
                    entry = self._log_entry(accum, accum_n, time.perf_counter() - tick, window_frames)
                    if main:
                        if self.step % cfg.val_every == 0 or done:
                            last_val = self.validate()
                            entry.update(last_val)
                        with open(log_path, "a", encoding="utf-8") as handle:
                            handle.write(json.dumps(entry) + "\n")
                        bar.set_postfix(
                            loss=f"{entry['loss']:.4f}",
                            **({"val": f"{last_val['val_loss']:.4f}"} if last_val else {}),
                        )
                        if on_log is not None:
                            on_log(entry)
                    accum, accum_n = {}, 0
                    tick = time.perf_counter()
                if main and (self.step % cfg.checkpoint_every == 0 or done):
                    checkpoint = self.save()
                if out_of_time or interrupted:
                    break
        bar.close()
        self.dist.barrier()  # the last checkpoint is written before any rank returns
        if interrupted and self.step < cfg.max_steps:  # (a run that got to its end is complete)
            raise TrainingInterrupted(
                f"at step {self.step}: checkpoint {checkpoint} written; continue with: "
                f"mofusion train --out {self.run_dir} --resume {self.run_dir}"
            )
        return TrainResult(self.run_dir, self.step, checkpoint, last_val)

    def _log_entry(
        self, accum: dict[str, Tensor], count: int, elapsed: float, window_frames: int
    ) -> dict[str, Any]:
        """Average the accumulated statistics (one host sync per log line; over all ranks when there
        are several, so the log shows the global batch) and check they are finite."""
        values = {k: v.detach().float().cpu() for k, v in self.dist.mean(accum).items()}
        entry: dict[str, Any] = {"step": self.step}
        for k, v in values.items():
            if not k.startswith("eps_mse_quartile"):
                entry[k] = float(v) / count
        sums, counts = values["eps_mse_quartile_sum"], values["eps_mse_quartile_count"]
        for q in range(4):
            if counts[q] > 0:
                entry[f"eps_mse_q{q}"] = float(sums[q] / counts[q])
        if not math.isfinite(entry["loss"]):
            raise MofusionError(
                f"step {self.step}: the loss is not finite; stopping (the last checkpoint is intact). "
                "Lower train.lr?"
            )
        entry["steps_per_s"] = count / elapsed
        entry["frames_per_s"] = count * window_frames / elapsed
        return entry
