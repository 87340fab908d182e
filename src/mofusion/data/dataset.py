"""Processed motion data: feature caches keyed by source hashes, splits, and training windows.

``load_dataset`` turns a folder of motions into a :class:`MotionDataset`:

1. list the clips (:func:`mofusion.data.sources.discover`), hashing every source file;
2. if ``<cache>/features/<key>.npz`` exists for the hash of (sources, processing options), load it;
   otherwise read every BVH, fold/retarget/resample it, encode features, and write that file
   atomically;
3. load ``<cache>/splits/<key>.json`` or create it: a deterministic train/val/test split by clip,
   stratified by the content label where there is one.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._io import NUMPY_READ_ERRORS, atomic_path, atomic_write_json
from ..bvh import read_bvh
from ..captions import caption_label
from ..config import DataConfig
from ..errors import InputError, MofusionError
from ..motion import Motion
from ..paths import cache_dir, file_digest
from ..representation import FeatureSpec, MotionRepresentation, Normalizer
from ..skeleton import Skeleton, joint_side
from .sources import ClipSource, discover

if TYPE_CHECKING:
    from ..audio import AudioFeatureConfig

CACHE_VERSION = 1
SPLITS = ("train", "val", "test")


# -- the processed collection -----------------------------------------------------------------------


@dataclass(eq=False)
class ClipCollection:
    """Features of many clips, concatenated along time.

    Args:
        spec: the feature spec (holds the canonical skeleton).
        features: ``(N, C)`` float32, clip after clip.
        offsets: ``(K + 1,)`` start of each clip in ``features`` (and the end).
        names: clip names.
        labels: per clip, e.g. ``{"content": "walk", "style": "happy", "subset": "dataset-2"}``.
        file_scale: the factor that turned file units into metres (BVH export writes them back).
        condition: ``(N, M)`` float32 condition features aligned with ``features`` frame by frame
            (the music of a dance), or None.
    """

    spec: FeatureSpec
    features: np.ndarray
    offsets: np.ndarray
    names: list[str]
    labels: list[dict[str, str]]
    file_scale: float = 1.0
    condition: np.ndarray | None = None
    split: dict[str, list[str]] | None = None
    """The data set's own split, carried by a music pack (dance data keep their split by dance)."""
    music: dict[str, Any] | None = None
    """How ``condition`` was computed (an AudioFeatureConfig as a dict), carried by a music pack."""

    @classmethod
    def of_clips(
        cls,
        spec: FeatureSpec,
        clips: list[np.ndarray],
        names: list[str],
        labels: list[dict[str, str]],
        file_scale: float = 1.0,
        conditions: list[np.ndarray] | None = None,
    ) -> ClipCollection:
        """Per-clip features ``(T_k, C)`` (and per-clip condition frames) joined into one collection."""
        lengths = [len(c) for c in clips]
        return cls(
            spec,
            np.concatenate(clips) if clips else np.zeros((0, spec.dim), np.float32),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            names,
            labels,
            file_scale,
            None if conditions is None else np.concatenate(conditions),
        )

    @property
    def num_clips(self) -> int:
        return len(self.names)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def clip(self, index: int) -> np.ndarray:
        return self.features[self.offsets[index] : self.offsets[index + 1]]

    def clip_condition(self, index: int) -> np.ndarray | None:
        if self.condition is None:
            return None
        return self.condition[self.offsets[index] : self.offsets[index + 1]]

    def select(self, indices: list[int]) -> ClipCollection:
        parts = [self.clip(i) for i in indices]
        lengths = [len(p) for p in parts]
        condition = None
        if self.condition is not None:
            rows = [self.condition[self.offsets[i] : self.offsets[i + 1]] for i in indices]
            condition = np.concatenate(rows) if rows else self.condition[:0]
        return ClipCollection(
            self.spec,
            np.concatenate(parts) if parts else self.features[:0],
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            [self.names[i] for i in indices],
            [self.labels[i] for i in indices],
            self.file_scale,
            condition,
        )

    def save(self, path: str | Path, dtype: Any = None) -> None:
        """Write an .npz atomically (``dtype``: e.g. float16 for a pack half the size)."""
        meta = {
            "spec": self.spec.to_dict(),
            "names": self.names,
            "labels": self.labels,
            "file_scale": self.file_scale,
            "version": CACHE_VERSION,
            **({"split": self.split} if self.split is not None else {}),
            **({"music": self.music} if self.music is not None else {}),
        }
        features = self.features if dtype is None else self.features.astype(dtype)
        extra = {} if self.condition is None else {"condition": self.condition}
        if dtype is not None and self.condition is not None:
            extra = {"condition": self.condition.astype(dtype)}
        with atomic_path(path) as tmp:
            np.savez(tmp, features=features, offsets=self.offsets, meta=np.array(json.dumps(meta)), **extra)

    @classmethod
    def load(cls, path: str | Path) -> ClipCollection:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                features = data["features"].astype(np.float32)
                offsets = data["offsets"].astype(np.int64)
                condition = data["condition"].astype(np.float32) if "condition" in data.files else None
        except (*NUMPY_READ_ERRORS, json.JSONDecodeError) as exc:
            raise InputError(path, f"not a mofusion feature cache ({exc})") from None
        if meta.get("version") != CACHE_VERSION:
            raise InputError(path, f"feature cache version {meta.get('version')} (expected {CACHE_VERSION})")
        spec = FeatureSpec.from_dict(meta["spec"])
        return cls(
            spec,
            features,
            offsets,
            meta["names"],
            meta["labels"],
            meta.get("file_scale", 1.0),
            condition,
            meta.get("split"),
            meta.get("music"),
        )


# -- building it from files ---------------------------------------------------------------------------


def guess_file_scale(skeleton: Skeleton) -> float:
    """Metres per file unit from the rest height of the legs: centimetres, inches or metres."""
    lengths = skeleton.bone_lengths()
    leg = float(np.sort(lengths)[-4:].sum()) / 2  # the four longest bones are thighs and shins
    if leg > 20:
        return 0.01
    if leg > 2.5:
        return 0.0254
    return 1.0


def _find_joint(names: tuple[str, ...], side: str, keywords: tuple[str, ...]) -> str | None:
    for keyword in keywords:
        for name in names:
            if keyword in name.lower() and joint_side(name) == side:
                return name
    return None


def guess_body_joints(skeleton: Skeleton) -> tuple[list[str], list[str], list[str]]:
    """Face joints (right hip, left hip, right shoulder, left shoulder) and feet from joint names."""
    names = skeleton.names
    hips = {s: _find_joint(names, s, ("upleg", "upperleg", "thigh", "hip")) for s in ("right", "left")}
    shoulders = {s: _find_joint(names, s, ("upperarm", "arm", "shoulder")) for s in ("right", "left")}
    ankles = {s: _find_joint(names, s, ("ankle", "foot")) for s in ("right", "left")}
    toes = {s: _find_joint(names, s, ("toe", "ball")) for s in ("right", "left")}
    face = [hips["right"], hips["left"], shoulders["right"], shoulders["left"]]
    if any(n is None for n in face) or ankles["left"] is None or ankles["right"] is None:
        raise MofusionError(
            "cannot tell hips, shoulders and feet apart from the joint names "
            f"({', '.join(names)}); set data.face_joints, data.left_foot and data.right_foot"
        )
    left = [n for n in (ankles["left"], toes["left"]) if n]
    right = [n for n in (ankles["right"], toes["right"]) if n]
    return face, left, right  # type: ignore[return-value]


def _read_motion(clip: ClipSource, scale: float, collapse: bool | None) -> Motion:
    return Motion.from_bvh(read_bvh(clip.path), scale=scale, collapse_root=collapse, source=str(clip.path))


def _process_clip(
    args: tuple[ClipSource, dict[str, Any], float, bool | None, bool],
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Read, retarget, resample and encode one clip; optionally keep its rotations and root path."""
    clip, spec_dict, scale, collapse, keep_motion = args
    spec = FeatureSpec.from_dict(spec_dict)
    motion = _read_motion(clip, scale, collapse)
    if not motion.skeleton.same_topology(spec.skeleton):
        raise InputError(
            clip.path,
            f"skeleton ({motion.skeleton.describe()}) differs from the data set's "
            f"({spec.skeleton.describe()})",
        )
    motion = motion.with_skeleton(spec.skeleton).resample(spec.fps)
    if motion.num_frames < 2:
        return np.zeros((0, spec.dim), dtype=np.float32), None
    features = _encode(spec, motion, clip.path)
    kept = (
        (motion.rotations.astype(np.float32), motion.root_positions.astype(np.float32))
        if keep_motion
        else None
    )
    return features, kept


def _encode(spec: FeatureSpec, motion: Motion, source: Path | str) -> np.ndarray:
    features = MotionRepresentation(spec).encode_motion(motion).numpy().astype(np.float32)
    if not np.isfinite(features).all():
        raise InputError(source, "the motion gives non-finite features (degenerate pose?)")
    return features


def _reference_skeleton(clips: list[ClipSource], cfg: DataConfig) -> tuple[Skeleton, float, bool | None]:
    """The data set's skeleton: the first clip's topology with the median offsets over a sample."""
    collapse = {"auto": None, "yes": True, "no": False}[cfg.collapse_root]
    sample = clips[:: max(1, len(clips) // 50)][:50]
    first = _read_motion(sample[0], 1.0, collapse)
    scale = cfg.file_scale or guess_file_scale(first.skeleton)
    offsets = []
    for clip in sample:
        skeleton = _read_motion(clip, 1.0, collapse).skeleton
        if not skeleton.same_topology(first.skeleton):
            raise InputError(
                clip.path, f"skeleton differs from {sample[0].path.name}'s ({first.skeleton.describe()})"
            )
        offsets.append(skeleton.offsets)
    skeleton = first.skeleton.with_offsets(np.median(np.stack(offsets), axis=0)).scaled(scale)
    return skeleton, scale, collapse


def _spec_for(skeleton: Skeleton, cfg: DataConfig) -> FeatureSpec:
    if cfg.face_joints and cfg.left_foot and cfg.right_foot:
        face, left, right = list(cfg.face_joints), list(cfg.left_foot), list(cfg.right_foot)
    else:
        face, left, right = guess_body_joints(skeleton)
        face = list(cfg.face_joints) or face
        left = list(cfg.left_foot) or left
        right = list(cfg.right_foot) or right
    return FeatureSpec(
        skeleton=skeleton,
        fps=cfg.fps,
        face_joints=tuple(face),  # type: ignore[arg-type]
        left_foot=tuple(left),
        right_foot=tuple(right),
        contact_speed=cfg.contact_speed,
        facing_smoothing=cfg.facing_smoothing,
        rotation_source="local",
    )


def _processing_key(digests: list[str], cfg: DataConfig) -> str:
    options = {
        "fps": cfg.fps,
        "file_scale": cfg.file_scale,
        "collapse_root": cfg.collapse_root,
        "face_joints": cfg.face_joints,
        "left_foot": cfg.left_foot,
        "right_foot": cfg.right_foot,
        "contact_speed": cfg.contact_speed,
        "facing_smoothing": cfg.facing_smoothing,
        "version": CACHE_VERSION,
    }
    h = hashlib.sha256(json.dumps({"sources": sorted(digests), "options": options}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def build_collection(
    cfg: DataConfig, cache: str | Path | None = None, progress: bool = True
) -> ClipCollection:
    """Processed features of the clips under ``cfg.path``, from the cache when it is up to date.

    ``cfg.path`` may also be a feature file written by :meth:`ClipCollection.save` or a motion pack
    written by :func:`write_motion_pack`.
    """
    if cfg.path.lower().endswith(".npz"):
        return _load_npz(Path(cfg.path), cfg, cache, progress)
    sources = discover(cfg.path, cfg.subsets or None, cache)
    key = _processing_key(sources.digests, cfg)
    target = cache_dir(cache) / "features" / f"{key}.npz"
    if target.is_file():
        return ClipCollection.load(target)
    collection, _ = _process_sources(sources.clips, cfg, progress, keep_motions=False)
    collection.save(target)
    return collection


def _process_sources(
    clips: list[ClipSource], cfg: DataConfig, progress: bool, keep_motions: bool
) -> tuple[ClipCollection, list[tuple[np.ndarray, np.ndarray]]]:
    skeleton, scale, collapse = _reference_skeleton(clips, cfg)
    spec = _spec_for(skeleton, cfg)
    jobs = [(clip, spec.to_dict(), scale, collapse, keep_motions) for clip in clips]
    results = _run_jobs(_process_clip, jobs, f"processing {len(jobs)} clips", progress)
    keep = [i for i, (f, _) in enumerate(results) if len(f) > 0]
    if not keep:
        raise InputError(cfg.path, "every clip is shorter than two frames")
    collection = ClipCollection.of_clips(
        spec,
        [results[i][0] for i in keep],
        [clips[i].name for i in keep],
        [clips[i].labels for i in keep],
        scale,
    )
    motions = [results[i][1] for i in keep] if keep_motions else []
    return collection, motions  # type: ignore[return-value]


def _run_jobs(fn: Any, jobs: list[Any], label: str, progress: bool) -> list[Any]:
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(workers, 16))
    results = []
    with tqdm(total=len(jobs), desc=label, unit="clip", disable=not progress) as bar:
        if workers > 1 and len(jobs) > 8:
            # spawn, not fork: forking a process whose torch thread pools are running can deadlock
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for result in pool.map(fn, jobs, chunksize=16):
                    results.append(result)
                    bar.update()
        else:
            for job in jobs:
                results.append(fn(job))
                bar.update()
    return results


# -- compact motion packs (to carry a data set to another machine) ------------------------------------

PACK_KIND = "mofusion-motion-pack"
_QUAT_SCALE = 32767.0


def write_motion_pack(
    cfg: DataConfig,
    path: str | Path,
    cache: str | Path | None = None,
    progress: bool = True,
    every: int = 1,
) -> ClipCollection:
    """Write the resampled motions of a data set as a compact .npz that ``--data`` accepts.

    Rotations are stored as "smallest three" quaternions (the index of the largest component and
    the other three as int16, resolution 2e-5; the largest follows from the unit norm) and root
    positions as float32, compressed: about a fifth of the size of float16 features (small enough to
    carry a whole Bandai-Namco subset to a GPU machine beside the repository), and exact enough that
    the features computed from it differ from the originals by less than 0.1 mm in joint positions.
    ``every``: keep every N-th clip (in the data set's order) for a small sample.
    """
    sources = discover(cfg.path, cfg.subsets or None, cache)
    collection, motions = _process_sources(sources.clips[::every], cfg, progress, keep_motions=True)
    rotations = np.concatenate([m[0] for m in motions])
    roots = np.concatenate([m[1] for m in motions])
    lengths = [len(m[0]) for m in motions]
    meta = {
        "kind": PACK_KIND,
        "version": CACHE_VERSION,
        "spec": collection.spec.to_dict(),
        "names": collection.names,
        "labels": collection.labels,
        "file_scale": collection.file_scale,
    }
    largest, rest = _smallest_three(rotations)
    with atomic_path(path) as tmp:
        np.savez_compressed(
            tmp,
            rotations=rest,
            largest=largest,
            roots=roots.astype(np.float32),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            meta=np.array(json.dumps(meta)),
        )
    return collection


def _smallest_three(quaternions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(largest, rest)``: per quaternion the index of its largest component (uint8) and the other
    three, sign-flipped so that the largest is positive (q and -q are the same rotation), as int16
    of their range +-1/sqrt(2)."""
    largest = np.abs(quaternions).argmax(-1)
    picked = np.take_along_axis(quaternions, largest[..., None], -1)
    q = quaternions * np.where(picked < 0, -1.0, 1.0)
    rest = q[_other_components(q.shape, largest)].reshape(*q.shape[:-1], 3) * (_QUAT_SCALE * np.sqrt(2.0))
    return largest.astype(np.uint8), np.clip(np.round(rest), -_QUAT_SCALE, _QUAT_SCALE).astype(np.int16)


def _pack_rotations(data: Any, path: Path) -> np.ndarray:
    """The unit quaternions of an opened pack, checked: smallest three, or the older four int16."""
    stored = data["rotations"]
    if "largest" not in data.files:  # packs written before the smallest-three layout
        if stored.ndim != 3 or stored.shape[-1] != 4:
            raise InputError(path, "a damaged motion pack (rotations are not quaternions)")
        return stored.astype(np.float64) / _QUAT_SCALE
    largest = data["largest"]
    if stored.ndim != 3 or stored.shape[-1] != 3 or largest.shape != stored.shape[:-1] or largest.max() > 3:
        raise InputError(path, "a damaged motion pack (rotations are not smallest-three quaternions)")
    return _from_smallest_three(largest, stored)


def _from_smallest_three(largest: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Unit quaternions back from :func:`_smallest_three`."""
    rest = rest.astype(np.float64) / (_QUAT_SCALE * np.sqrt(2.0))
    big = np.sqrt(np.clip(1.0 - (rest**2).sum(-1), 0.0, 1.0))
    q = np.empty((*rest.shape[:-1], 4))
    q[_other_components(q.shape, largest)] = rest.reshape(-1)
    np.put_along_axis(q, largest.astype(np.int64)[..., None], big[..., None], -1)
    return q


def _other_components(shape: tuple[int, ...], largest: np.ndarray) -> np.ndarray:
    """Boolean mask over quaternions of ``shape``: every component but the one ``largest`` names."""
    others = np.ones(shape, dtype=bool)
    np.put_along_axis(others, largest.astype(np.int64)[..., None], False, -1)
    return others


# what reading a damaged .npz raises (a truncated zip, a corrupt compressed member, a missing array)
def _load_npz(path: Path, cfg: DataConfig, cache: str | Path | None, progress: bool) -> ClipCollection:
    try:
        with np.load(path, allow_pickle=False) as data:
            is_pack = "rotations" in data.files
    except NUMPY_READ_ERRORS as exc:
        raise InputError(path, f"not a readable .npz ({exc})") from None
    if not is_pack:
        return ClipCollection.load(path)
    key = hashlib.sha256(f"{file_digest(path)}:{CACHE_VERSION}".encode()).hexdigest()[:24]
    target = cache_dir(cache) / "features" / f"pack-{key}.npz"
    if target.is_file():
        return ClipCollection.load(target)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("kind") != PACK_KIND or meta.get("version") != CACHE_VERSION:
                raise InputError(path, "not a motion pack of this mofusion version")
            rotations = _pack_rotations(data, path)
            roots = data["roots"].astype(np.float64)
            offsets = data["offsets"].astype(np.int64)
    except (*NUMPY_READ_ERRORS, json.JSONDecodeError) as exc:
        raise InputError(path, f"a damaged motion pack ({type(exc).__name__}: {exc})") from None
    if roots.shape != (len(rotations), 3) or offsets[0] != 0 or offsets[-1] != len(rotations):
        raise InputError(path, "a damaged motion pack (its arrays disagree in length)")
    spec = FeatureSpec.from_dict(meta["spec"])
    rotations /= np.linalg.norm(rotations, axis=-1, keepdims=True)
    features = []
    for i in tqdm(range(len(offsets) - 1), desc="encoding pack", unit="clip", disable=not progress):
        sl = slice(offsets[i], offsets[i + 1])
        motion = Motion(spec.skeleton, rotations[sl], roots[sl], spec.fps)
        features.append(_encode(spec, motion, path))
    collection = ClipCollection.of_clips(spec, features, meta["names"], meta["labels"], meta["file_scale"])
    collection.save(target)
    return collection


# -- splits --------------------------------------------------------------------------------------------


def make_split(
    names: list[str], labels: list[dict[str, str]], seed: int, val_fraction: float, test_fraction: float
) -> dict[str, list[str]]:
    """Deterministic split by clip: within each (subset, content) group, a seeded shuffle of the
    sorted names, then rounded fractions to test and val, the rest to train."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name, lab in zip(names, labels, strict=True):
        groups[f"{lab.get('subset', '')}/{lab.get('content', '')}"].append(name)
    split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for group in sorted(groups):
        members = sorted(groups[group])
        group_seed = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "little")
        order = np.random.default_rng(group_seed).permutation(len(members))
        n_test = int(np.floor(len(members) * test_fraction + 0.5))
        n_val = int(np.floor(len(members) * val_fraction + 0.5))
        if n_test + n_val >= len(members):
            n_test = n_val = 0
        shuffled = [members[i] for i in order]
        split["test"] += shuffled[:n_test]
        split["val"] += shuffled[n_test : n_test + n_val]
        split["train"] += shuffled[n_test + n_val :]
    return {k: sorted(v) for k, v in split.items()}


def load_or_make_split(
    collection: ClipCollection, cfg: DataConfig, cache: str | Path | None = None
) -> tuple[dict[str, list[str]], Path]:
    """The split of ``collection``: read from the cache when present, else made and written there."""
    options = [cfg.split_seed, cfg.val_fraction, cfg.test_fraction, sorted(collection.names)]
    key = hashlib.sha256(json.dumps(options).encode()).hexdigest()[:24]
    path = cache_dir(cache) / "splits" / f"{key}.json"
    if path.is_file():
        try:
            split = json.loads(path.read_text(encoding="utf-8"))
            if sorted(sum((split[s] for s in SPLITS), [])) == sorted(collection.names):
                return split, path
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    split = make_split(
        collection.names, collection.labels, cfg.split_seed, cfg.val_fraction, cfg.test_fraction
    )
    atomic_write_json(path, split)
    return split, path


# -- windows ------------------------------------------------------------------------------------------


@dataclass
class WindowBatch:
    """Training windows: ``x (B, T, C)`` normalised features, ``mask (B, T)`` of real frames, the
    index of each window's ``clip`` in its split (to look up its captions) and, for data with
    frame-aligned conditions (music), ``cond (B, T, M)``."""

    x: Tensor
    mask: Tensor
    clip: Tensor | None = None
    cond: Tensor | None = None

    def select(self, keep: Tensor) -> WindowBatch:
        clip = None if self.clip is None else self.clip[keep.cpu()]
        on = keep.to(self.x.device)
        cond = None if self.cond is None else self.cond[on]
        return WindowBatch(self.x[on], self.mask[on], clip, cond)


class WindowSampler:
    """Fixed-length windows over concatenated clips, drawn on the device that holds the features.

    A clip is drawn with probability proportional to the number of windows it offers (at least
    one), then a uniform start; clips shorter than the window are padded with zeros (the mean, in
    normalised units) and masked. With ``classes`` (a class index per clip) and ``balance`` a, a
    clip's weight is further divided by its class's total window count to the power a.
    """

    def __init__(
        self,
        features: Tensor,
        offsets: np.ndarray,
        window: int,
        condition: Tensor | None = None,
        classes: np.ndarray | None = None,
        balance: float = 0.0,
    ) -> None:
        self.features = features
        self.condition = condition
        self.window = window
        self.starts = torch.as_tensor(offsets[:-1], dtype=torch.int64)
        self.lengths = torch.as_tensor(np.diff(offsets), dtype=torch.int64)
        weights = torch.clamp(self.lengths.double() / window, min=1.0)
        if classes is not None and balance > 0:
            index = torch.as_tensor(np.asarray(classes), dtype=torch.int64)
            totals = torch.zeros(int(index.max()) + 1, dtype=torch.float64).index_add_(0, index, weights)
            weights = weights * totals[index] ** -balance
        self.weights = weights / weights.sum()

    def __len__(self) -> int:
        return len(self.lengths)

    def sample(self, batch_size: int, generator: torch.Generator) -> WindowBatch:
        clip = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)
        span = (self.lengths[clip] - self.window).clamp_min(0)
        start = (torch.rand(batch_size, generator=generator, dtype=torch.float64) * (span + 1)).floor().long()
        return self._gather(clip, start)

    def fixed(self) -> WindowBatch:
        """Every clip cut into consecutive windows (the last one padded): a fixed evaluation set."""
        clips, starts = [], []
        for c, length in enumerate(self.lengths.tolist()):
            for s in range(0, max(length, 1), self.window):
                clips.append(c)
                starts.append(s)
        return self._gather(torch.tensor(clips), torch.tensor(starts))

    def _gather(self, clip: Tensor, start: Tensor) -> WindowBatch:
        steps = torch.arange(self.window)
        local = start[:, None] + steps[None, :]
        mask = local < self.lengths[clip][:, None]
        index = (self.starts[clip][:, None] + local.clamp_max(self.lengths[clip][:, None] - 1)).to(
            self.features.device
        )
        mask = mask.to(self.features.device)
        x = self.features[index] * mask[..., None]
        cond = None if self.condition is None else self.condition[index]
        return WindowBatch(x, mask, clip.cpu(), cond)


# -- the data set ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class MotionDataset:
    """A processed collection with its split and the normaliser fitted on the training clips."""

    collection: ClipCollection
    split: dict[str, list[str]]
    split_path: Path | None
    normalizer: Normalizer

    @property
    def spec(self) -> FeatureSpec:
        return self.collection.spec

    def subset(self, name: str) -> ClipCollection:
        wanted = set(self.split[name])
        return self.collection.select([i for i, n in enumerate(self.collection.names) if n in wanted])

    def sampler(
        self, name: str, window: int, device: torch.device | str = "cpu", class_balance: float = 0.0
    ) -> WindowSampler:
        """Windows of a split; ``class_balance``: see ``TrainConfig.class_balance`` (a clip's class
        is its ``content`` label, else its caption label: for written captions, the clip)."""
        part = self.subset(name)
        if part.num_clips == 0:
            raise MofusionError(f"the {name} split is empty; use more clips or other split fractions")
        features = torch.from_numpy(part.features).float().to(self.normalizer.mean.device)
        condition = None if part.condition is None else torch.from_numpy(part.condition).float().to(device)
        classes = None
        if class_balance > 0:
            names = [label.get("content") or caption_label(label) for label in part.labels]
            index = {n: i for i, n in enumerate(sorted(set(names)))}
            classes = np.array([index[n] for n in names])
        return WindowSampler(
            self.normalizer.normalize(features).to(device),
            part.offsets,
            window,
            condition,
            classes,
            class_balance,
        )


def is_music_data(path: str | Path) -> bool:
    """Whether ``path`` is a dance data set with songs (dance-with-melody or an AIST++ folder)."""
    from .aistpp import is_aistpp
    from .dance_melody import is_dance_with_melody

    return is_dance_with_melody(path) or is_aistpp(path)


def build_music_collection(
    cfg: DataConfig,
    music: AudioFeatureConfig | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
) -> tuple[ClipCollection, dict[str, list[str]], Path]:
    """A dance data set with songs (dance-with-melody or AIST++), its split and the split's file;
    each clip's labels name its song (``audio``) and where in it the clip starts
    (``music_start_seconds``); with ``music``, every frame carries the song's features."""
    from .aistpp import build_aistpp_collection, is_aistpp
    from .dance_melody import build_dance_collection, is_dance_with_melody

    if is_aistpp(cfg.path):
        return build_aistpp_collection(cfg, music, cache)
    if is_dance_with_melody(cfg.path):
        return build_dance_collection(cfg, music, cache, progress)
    raise InputError(cfg.path, "neither dance-with-melody nor an AIST++ folder (motions/*.pkl)")


def load_dataset(
    cfg: DataConfig,
    cache: str | Path | None = None,
    normalizer: Normalizer | None = None,
    progress: bool = True,
    music: AudioFeatureConfig | None = None,
) -> MotionDataset:
    """Build (or load from cache) the data set described by ``cfg``.

    ``normalizer`` is reused when given (fine-tuning, resuming); otherwise it is fitted on the
    training split. ``music``: give dance data the song's features of every frame.
    """
    if not cfg.path:
        raise MofusionError("no data path: pass --data PATH")
    from ..presets import HUMANML3D_FPS
    from .humanml3d import is_humanml3d, load_humanml3d_splits

    split_path: Path | None
    if is_humanml3d(cfg.path):
        if cfg.fps != HUMANML3D_FPS:
            raise InputError(cfg.path, f"HumanML3D is at {HUMANML3D_FPS:g} fps; data.fps is {cfg.fps}")
        collection, split = load_humanml3d_splits(cfg.path)
        split_path = None
    elif is_music_data(cfg.path):
        collection, split, split_path = build_music_collection(cfg, music, cache, progress)
    else:
        collection = build_collection(cfg, cache, progress)
        if collection.split is not None:  # a music pack keeps its data set's split
            split, split_path = collection.split, None
            split.setdefault("val", [])
        else:
            split, split_path = load_or_make_split(collection, cfg, cache)
        if music is not None and collection.music is not None and collection.music != asdict(music):
            raise InputError(
                cfg.path, f"music features computed as {collection.music}, the model asks for {asdict(music)}"
            )
    if normalizer is None:
        train = collection.select([i for i, n in enumerate(collection.names) if n in set(split["train"])])
        if train.num_clips == 0:
            raise MofusionError("the training split is empty")
        normalizer = Normalizer.fit(torch.from_numpy(train.features), collection.spec.slices)
    return MotionDataset(collection, split, split_path, normalizer)
