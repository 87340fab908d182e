"""The text-motion evaluator: a motion encoder and a text head, trained contrastively, whose shared
embedding space gives the field's text-to-motion metrics (Guo et al. 2022; TMR, Petrovich et al. 2023).

The text side is the frozen sentence vector of the text encoder (all-MiniLM-L6-v2) followed by a
small MLP; the motion side is a 1-D convolutional encoder over normalised features with masked
mean/max pooling, so motions of any length up to ``max_frames`` embed. Training uses a symmetric
InfoNCE loss whose positives are all pairs with the same caption label (content/style), so two
walks of one style are never pushed apart. It is trained on the training split only; its weights
(float16, a few MB) ship in the package beside the default model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import PRETRAINED_DIR
from .conditioning import CaptionBank
from .config import ConditionConfig
from .data.dataset import MotionDataset
from .errors import CheckpointError, MofusionError, first_line
from .representation import FeatureSpec

DEFAULT_EVALUATOR = "evaluator-bandai"
_CONFIG = "evaluator.json"
_WEIGHTS = "evaluator.safetensors"


@dataclass
class EvaluatorConfig:
    feature_dim: int = 0
    feature_index: list[int] = field(default_factory=list)
    """Features the motion encoder reads: root motion, joint positions, velocities, contacts (the
    rotations say the same as the positions, at twice the width)."""
    text_dim: int = 384
    text_encoder: str = "minilm"
    hidden: int = 128
    embed_dim: int = 256
    max_frames: int = 120
    min_frames: int = 16
    temperature: float = 0.07
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


class MotionEncoder(nn.Module):
    """``(B, T, F)`` normalised features with a ``(B, T)`` mask to ``(B, E)``."""

    def __init__(self, cfg: EvaluatorConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.conv_in = nn.Conv1d(len(cfg.feature_index), h, 3, padding=1)
        self.down = nn.Conv1d(h, h, 4, stride=2, padding=1)
        self.blocks = nn.ModuleList([nn.Conv1d(h, h, 5, padding=2 * d, dilation=d) for d in (1, 2, 4)])
        self.norms = nn.ModuleList([nn.GroupNorm(8, h) for _ in range(2 + len(self.blocks))])
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.SiLU(), nn.Linear(h, cfg.embed_dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None].to(x.dtype)
        h = F.silu(self.norms[0](self.conv_in(x.transpose(1, 2) * m))) * m
        if h.shape[-1] % 2:
            h, m = F.pad(h, (0, 1)), F.pad(m, (0, 1))
        m = m[..., ::2] * m[..., 1::2] + (m[..., ::2] - m[..., ::2] * m[..., 1::2])  # either frame real
        h = F.silu(self.norms[1](self.down(h))) * m
        for conv, norm in zip(self.blocks, self.norms[2:], strict=True):
            h = (h + F.silu(norm(conv(h)))) * m
        mean = h.sum(-1) / m.sum(-1).clamp_min(1.0)
        peak = h.masked_fill(m == 0, -1e4).amax(-1)
        return self.head(torch.cat((mean, peak), dim=-1))


class TextMotionEvaluator(nn.Module):
    """Embeds motions and sentence vectors into one space (unit vectors)."""

    def __init__(self, cfg: EvaluatorConfig, mean: Tensor | None = None, std: Tensor | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.motion = MotionEncoder(cfg)
        self.text = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.embed_dim)
        )
        width = len(cfg.feature_index)
        self.register_buffer("mean", torch.zeros(width) if mean is None else mean.float())
        self.register_buffer("std", torch.ones(width) if std is None else std.float())

    def embed_motion(self, features: Tensor, mask: Tensor) -> Tensor:
        """Features in data units ``(B, T, C)`` (not the generator's normalisation)."""
        x = (features.float()[..., self.config.feature_index] - self.mean) / self.std
        return F.normalize(self.motion(x, mask.bool()), dim=-1)

    def embed_text(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.text(pooled.float()), dim=-1)

    @torch.no_grad()
    def embed_motions(self, items: list[np.ndarray], batch_size: int = 256) -> Tensor:
        """Motions of any lengths (each ``(T, C)`` in data units), padded per batch."""
        self.eval()
        out = []
        for start in range(0, len(items), batch_size):
            part = items[start : start + batch_size]
            length = max(len(p) for p in part)
            x = torch.zeros(len(part), length, self.config.feature_dim)
            mask = torch.zeros(len(part), length, dtype=torch.bool)
            for i, p in enumerate(part):
                x[i, : len(p)] = torch.as_tensor(np.asarray(p, dtype=np.float32))
                mask[i, : len(p)] = True
            out.append(self.embed_motion(x, mask))
        return torch.cat(out) if out else torch.zeros(0, self.config.embed_dim)


def evaluator_features(spec: FeatureSpec) -> list[int]:
    keep = (
        "root_yaw_velocity",
        "root_xz_velocity",
        "root_height",
        "local_positions",
        "velocities",
        "contacts",
    )
    index: list[int] = []
    for name in keep:
        part = spec.slices[name]
        index.extend(range(part.start, part.stop))
    return index


def contrastive_loss(motion: Tensor, text: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE with every same-label pair a positive (soft targets)."""
    logits = motion @ text.T / temperature
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (
        -(targets * logits.log_softmax(1)).sum(1).mean() - (targets.T * logits.log_softmax(0)).sum(0).mean()
    )


def _crops(
    features: np.ndarray,
    offsets: np.ndarray,
    clips: np.ndarray,
    cfg: EvaluatorConfig,
    rng: np.random.Generator,
) -> tuple[Tensor, Tensor]:
    x = torch.zeros(len(clips), cfg.max_frames, features.shape[1])
    mask = torch.zeros(len(clips), cfg.max_frames, dtype=torch.bool)
    for i, c in enumerate(clips):
        start, end = int(offsets[c]), int(offsets[c + 1])
        total = end - start
        length = min(total, int(rng.integers(cfg.min_frames, cfg.max_frames + 1)))
        begin = start + int(rng.integers(0, total - length + 1))
        x[i, :length] = torch.from_numpy(features[begin : begin + length])
        mask[i, :length] = True
    return x, mask


def train_evaluator(
    dataset: MotionDataset,
    cfg: EvaluatorConfig,
    cache: str | Path | None = None,
    progress: bool = True,
) -> tuple[TextMotionEvaluator, dict[str, float]]:
    """Train on the training split; report retrieval accuracy on the validation split."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train = dataset.subset("train")
    cond = ConditionConfig(kind="text", text_encoder=cfg.text_encoder)
    bank = CaptionBank(train.labels, train.names, cond, cache, "train")
    cfg.feature_dim = dataset.spec.dim
    cfg.feature_index = evaluator_features(dataset.spec)
    cfg.text_dim = bank.dim
    feats = torch.from_numpy(train.features)[:, cfg.feature_index]
    model = TextMotionEvaluator(cfg, feats.mean(0), feats.std(0).clamp_min(1e-4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    pooled = bank.table.pooled
    num_labels = len(bank.label_names)
    # draw clips label-balanced: every label as likely (rare dataset-1 classes still get learned)
    by_label = [np.flatnonzero(bank.clip_label.numpy() == k) for k in range(num_labels)]
    for step in tqdm(range(cfg.steps), desc="evaluator", disable=not progress):
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        labels = rng.integers(0, num_labels, cfg.batch_size)
        clips = np.array([rng.choice(by_label[k]) for k in labels])
        x, mask = _crops(train.features, train.offsets, clips, cfg, rng)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        captions = bank.draw(torch.from_numpy(clips), generator)
        m = model.embed_motion(x, mask)
        t = model.embed_text(pooled[captions])
        loss = contrastive_loss(m, t, torch.from_numpy(labels), cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return model, {"final_loss": float(loss.detach())}


def save_evaluator(model: TextMotionEvaluator, directory: str | Path, note: str = "") -> Path:
    """Write config + fp16 weights atomically (a temporary folder renamed into place)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        (tmp / _CONFIG).write_text(json.dumps(asdict(model.config), indent=2) + "\n", encoding="utf-8")
        tensors = {k: v.detach().cpu().half().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / _WEIGHTS))
        if note:
            (tmp / "README.md").write_text(note, encoding="utf-8")
        for item in tmp.iterdir():
            os.chmod(item, 0o644)  # package data: readable by everyone
        os.chmod(tmp, 0o755)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_evaluator(path: str | Path | None = None) -> TextMotionEvaluator:
    """A saved evaluator (default: the packaged one, trained on Bandai-Namco)."""
    directory = Path(path) if path is not None else PRETRAINED_DIR / DEFAULT_EVALUATOR
    if not (directory / _CONFIG).is_file() or not (directory / _WEIGHTS).is_file():
        raise CheckpointError(f"{directory}: not an evaluator (needs {_CONFIG} and {_WEIGHTS})")
    try:
        cfg = EvaluatorConfig(**json.loads((directory / _CONFIG).read_text(encoding="utf-8")))
        weights = {k: v.float() for k, v in load_file(str(directory / _WEIGHTS)).items()}
        model = TextMotionEvaluator(cfg)
        model.load_state_dict(weights)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{directory}: cannot load the evaluator ({first_line(exc)})") from None
    return model.eval()


def check_spec(model: TextMotionEvaluator, spec: FeatureSpec, source: str) -> None:
    if spec.dim != model.config.feature_dim:
        raise MofusionError(
            f"{source}: {spec.dim} features, but the evaluator was trained on {model.config.feature_dim}"
        )
