"""Checkpoints: self-describing directories, written atomically.

A checkpoint directory holds:

- ``config.json``: the full :class:`MofusionConfig`, the :class:`FeatureSpec` (skeleton included),
  the step, the file unit scale and a ``format_version``;
- ``model.safetensors``: the EMA weights of the denoiser (what inference uses);
- ``normalizer.safetensors``: feature mean and std;
- ``anchors.safetensors`` (text models on labelled data): the training classes' prompt anchors;
- ``train_state.pt`` (training checkpoints only): raw weights, optimiser, EMA, step, RNG seeds.

A run directory holds ``checkpoints/step-NNNNNNNN/`` and a ``latest`` file naming the newest; any
function taking a checkpoint path accepts either. A checkpoint is written into a temporary directory
that is renamed into place, and ``latest`` is replaced atomically after that, so an interrupted save
never leaves a half-written checkpoint behind ``latest``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ._io import _umask, atomic_write_text
from .conditioning import PromptAnchors
from .config import FORMAT_VERSION, MofusionConfig
from .errors import CheckpointError, MofusionError
from .representation import FeatureSpec, Normalizer

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.safetensors"
TRAIN_STATE_FILE = "train_state.pt"


@dataclass
class Checkpoint:
    """Everything needed to rebuild a model for inference (and, with ``train_state``, to resume)."""

    path: Path
    config: MofusionConfig
    spec: FeatureSpec
    normalizer: Normalizer
    weights: dict[str, torch.Tensor]
    step: int
    file_scale: float
    train_state: dict[str, Any] | None = None
    anchors: PromptAnchors | None = None


PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
DEFAULT_MODEL = "bandai-text"
EDIT_MODEL = "bandai-edit"


def packaged_name(edit: bool = False) -> str:
    """How results, the browser app and logs name a packaged model (one spelling everywhere)."""
    return "packaged editing model" if edit else "packaged text model"


def default_checkpoint(edit: bool = False) -> Path:
    """A model that ships inside the package (trained on Bandai-Namco, CC BY-NC 4.0): the text-to-
    motion model, or with ``edit`` the editing model (trained with masks; no text)."""
    path = PRETRAINED_DIR / (EDIT_MODEL if edit else DEFAULT_MODEL)
    if not (path / MODEL_FILE).is_file():
        raise CheckpointError(f"{path}: the packaged default model is missing; pass --checkpoint")
    return path


def resolve(path: str | Path) -> Path:
    """The checkpoint directory a user path names: itself, or the one a run's ``latest`` points to."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    latest = path / "latest"
    if (path / MODEL_FILE).is_file() or ((path / CONFIG_FILE).is_file() and not latest.is_file()):
        return path
    if latest.is_file():
        target = path / latest.read_text(encoding="utf-8").strip()
        if (target / MODEL_FILE).is_file():
            return target
        raise CheckpointError(f"{latest}: points to {target.name}, which is not a complete checkpoint")
    raise CheckpointError(f"{path}: not a checkpoint (no {CONFIG_FILE}) and not a run directory (no latest)")


def save_checkpoint(
    directory: str | Path,
    config: MofusionConfig,
    spec: FeatureSpec,
    normalizer: Normalizer,
    weights: dict[str, torch.Tensor],
    step: int,
    file_scale: float,
    train_state: dict[str, Any] | None = None,
    half: bool = False,
    anchors: PromptAnchors | None = None,
) -> Path:
    """Write a checkpoint directory atomically and return its path.

    ``half`` stores the weights as float16 (for shipping; they are loaded back as float32).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        meta = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "file_scale": file_scale,
            "config": config.to_dict(),
            "features": spec.to_dict(),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        dtype = torch.float16 if half else torch.float32
        tensors = {
            k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
            for k, v in weights.items()
        }
        save_file(tensors, str(tmp / MODEL_FILE))
        save_file(
            {"mean": normalizer.mean.cpu(), "std": normalizer.std.cpu(), "bound": normalizer.bound.cpu()},
            str(tmp / NORMALIZER_FILE),
        )
        if anchors is not None:
            anchors.save(tmp / PromptAnchors.FILE)
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE_FILE)
        for item in tmp.iterdir():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(item, 0o666 & ~_umask())  # as any other file the user writes (safetensors makes 0600)
        os.chmod(tmp, 0o755)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_checkpoint(
    path: str | Path, with_train_state: bool = False, map_location: str = "cpu"
) -> Checkpoint:
    """Read a checkpoint (or a run's latest one); raise :class:`CheckpointError` on any problem."""
    directory = resolve(path)
    for name in (CONFIG_FILE, MODEL_FILE, NORMALIZER_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: incomplete checkpoint, {name} is missing")
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: not valid JSON ({exc})") from None
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{directory}: checkpoint format {version!r} is not supported by this mofusion")
    try:
        config = MofusionConfig.from_dict(meta["config"], source=str(directory / CONFIG_FILE))
        spec = FeatureSpec.from_dict(meta["features"])
    except (KeyError, TypeError, ValueError, MofusionError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: invalid content ({exc})") from None
    try:
        weights = {
            k: v.float() if v.is_floating_point() else v
            for k, v in load_file(str(directory / MODEL_FILE)).items()
        }
        norm = load_file(str(directory / NORMALIZER_FILE))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{directory}: cannot read the weights ({exc})") from None
    if norm["mean"].shape != (spec.dim,) or norm["std"].shape != (spec.dim,):
        raise CheckpointError(f"{directory}: normalizer width does not match the feature width {spec.dim}")
    if config.denoiser.feature_dim != spec.dim:
        raise CheckpointError(
            f"{directory}: model width {config.denoiser.feature_dim} != feature width {spec.dim}"
        )
    anchors = None
    if (directory / PromptAnchors.FILE).is_file():
        try:
            anchors = PromptAnchors.load(directory / PromptAnchors.FILE)
        except Exception as exc:
            raise CheckpointError(f"{directory / PromptAnchors.FILE}: cannot be read ({exc})") from None
    train_state = None
    if with_train_state:
        state_file = directory / TRAIN_STATE_FILE
        if not state_file.is_file():
            raise CheckpointError(
                f"{directory}: no {TRAIN_STATE_FILE}; this checkpoint cannot resume training"
            )
        try:
            train_state = torch.load(state_file, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{state_file}: cannot be read ({exc})") from None
    return Checkpoint(
        directory,
        config,
        spec,
        Normalizer(norm["mean"], norm["std"], norm.get("bound")),
        weights,
        int(meta.get("step", 0)),
        float(meta.get("file_scale", 1.0)),
        train_state,
        anchors,
    )


def point_latest(run_dir: str | Path, checkpoint: Path) -> None:
    atomic_write_text(Path(run_dir) / "latest", f"{checkpoint.relative_to(run_dir).as_posix()}\n")


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints (never the one ``latest`` names)."""
    folder = Path(run_dir) / "checkpoints"
    latest = resolve(run_dir).resolve()
    steps = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else steps:
        if old.resolve() != latest:
            shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "Checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "point_latest",
    "prune_checkpoints",
    "resolve",
]
