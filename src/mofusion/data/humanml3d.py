"""HumanML3D's folder layout, for users who have the full data set (Guo et al. 2022).

Layout: ``new_joint_vecs/NAME.npy`` (T, 263) features at 20 fps on the 22-joint SMPL skeleton,
``texts/NAME.txt`` with one ``caption#tokens#start#end`` line per caption (start/end in seconds; both
0 or NaN mean the whole clip, otherwise the caption describes only that span), ``Mean.npy`` and
``Std.npy``, and the split lists ``train.txt`` / ``val.txt`` / ``test.txt``.

As the data set's own loader does, every time-cropped caption becomes a motion of its own (the
span of frames it describes), motions shorter than 40 frames or of 200 frames and more are left
out, and longer ones are cut to 196 frames (the field's cap) when windows are drawn. The result is
a :class:`ClipCollection` whose labels carry the captions, so the text machinery trains on it as
on captioned Bandai-Namco clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import NUMPY_READ_ERRORS
from ..errors import InputError
from ..presets import HUMANML3D_FPS, smpl22_humanml3d_spec
from .dataset import ClipCollection

HUMANML3D_DIM = 263
MIN_FRAMES = 40
MAX_FRAMES_EXCLUSIVE = 200
MAX_FRAMES = 196


@dataclass
class CaptionLine:
    caption: str
    tokens: list[str]
    start: float
    end: float

    @property
    def whole(self) -> bool:
        return (self.start == 0 and self.end == 0) or math.isnan(self.start) or math.isnan(self.end)


def read_captions(path: Path) -> list[CaptionLine]:
    """``caption#tokens#start#end`` lines (tokens are ``word/POS`` pairs separated by spaces)."""
    lines = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the captions ({exc})") from None
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        parts = raw.strip().split("#")
        if len(parts) != 4:
            raise InputError(
                path, f"line {number}: expected caption#tokens#start#end, got {len(parts)} fields"
            )
        try:
            start, end = float(parts[2]), float(parts[3])
        except ValueError:
            raise InputError(path, f"line {number}: start and end must be numbers") from None
        lines.append(CaptionLine(parts[0].strip(), parts[1].split(), start, end))
    return lines


def read_split(root: Path, split: str) -> list[str]:
    path = root / f"{split}.txt"
    if not path.is_file():
        raise InputError(path, "no such split file (HumanML3D has train.txt, val.txt, test.txt)")
    return [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]


def load_humanml3d(root: str | Path, split: str = "train") -> tuple[ClipCollection, np.ndarray, np.ndarray]:
    """The motions of one split with their captions, plus the data set's ``Mean.npy`` and ``Std.npy``.

    Each clip's labels hold ``captions`` (one per line) and ``source`` (the file it came from).
    """
    root = Path(root)
    stats = []
    for name in ("Mean.npy", "Std.npy"):
        try:
            value = np.load(root / name, allow_pickle=False)
        except NUMPY_READ_ERRORS as exc:
            raise InputError(root / name, f"cannot read ({exc})") from None
        if value.shape != (HUMANML3D_DIM,):
            raise InputError(root / name, f"expected shape ({HUMANML3D_DIM},), got {value.shape}")
        stats.append(value.astype(np.float32))
    parts: list[np.ndarray] = []
    names: list[str] = []
    labels: list[dict[str, str]] = []
    for name in read_split(root, split):
        vec_path = root / "new_joint_vecs" / f"{name}.npy"
        try:
            motion = np.load(vec_path, allow_pickle=False)
        except FileNotFoundError:
            continue  # the data set's own loader skips names whose motion is missing
        except NUMPY_READ_ERRORS as exc:
            raise InputError(vec_path, f"cannot read ({exc})") from None
        if motion.ndim != 2 or motion.shape[1] != HUMANML3D_DIM:
            raise InputError(vec_path, f"expected (T, {HUMANML3D_DIM}) features, got {motion.shape}")
        if not np.isfinite(motion).all():
            raise InputError(vec_path, "features contain NaN or inf")
        whole: list[str] = []
        for line in read_captions(root / "texts" / f"{name}.txt"):
            if line.whole:
                whole.append(line.caption)
                continue
            span = motion[int(line.start * HUMANML3D_FPS) : int(line.end * HUMANML3D_FPS)]
            if MIN_FRAMES <= len(span) < MAX_FRAMES_EXCLUSIVE:
                parts.append(span.astype(np.float32))
                names.append(f"{name}#{line.start:g}-{line.end:g}")
                labels.append({"captions": line.caption, "source": name})
        if whole and MIN_FRAMES <= len(motion) < MAX_FRAMES_EXCLUSIVE:
            parts.append(motion.astype(np.float32))
            names.append(name)
            labels.append({"captions": "\n".join(whole), "source": name})
    collection = ClipCollection.of_clips(smpl22_humanml3d_spec(), parts, names, labels)
    return collection, stats[0], stats[1]


def is_humanml3d(path: str | Path) -> bool:
    path = Path(path)
    return (path / "new_joint_vecs").is_dir() and (path / "texts").is_dir()


def load_humanml3d_splits(root: str | Path) -> tuple[ClipCollection, dict[str, list[str]]]:
    """All three splits as one collection, with the data set's own split (train/val/test.txt)."""
    parts = {split: load_humanml3d(root, split)[0] for split in ("train", "val", "test")}
    spec = parts["train"].spec
    features = np.concatenate([p.features for p in parts.values()])
    lengths = np.concatenate([p.lengths for p in parts.values()])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    names = [n for p in parts.values() for n in p.names]
    labels = [lab for p in parts.values() for lab in p.labels]
    collection = ClipCollection(spec, features, offsets, names, labels, 1.0)
    return collection, {split: list(p.names) for split, p in parts.items()}
