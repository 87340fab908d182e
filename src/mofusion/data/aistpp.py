"""AIST++ (Li et al. 2021) for users who have it: SMPL motions with their music and the official split.

Layout: ``motions/*.pkl`` (``smpl_poses`` (T, 72) axis-angle of the 24 SMPL joints, ``smpl_trans``
(T, 3), ``smpl_scaling`` (1,)), ``wav/<music id>.wav`` (the id is the fifth ``_`` field of a motion's
name, e.g. ``mBR0`` in ``gBR_sBM_cAll_d04_mBR0_ch01``), ``splits/crossmodal_{train,val,test}.txt``
and ``ignore_list.txt``, 60 fps.

Joint positions come from forward kinematics on the SMPL kinematic tree with the standard
neutral-body rest offsets (the root at the origin of its own frame, as EDGE and Bailando do); the
root follows ``smpl_trans / smpl_scaling`` (metres). Clips become :class:`~mofusion.motion.Motion`
objects with local rotations, resampled to the configured frame rate (slerp), so BVH export, the
kinematic losses and every metric work on them as on any BVH data set. The .pkl files are Python
pickles: load only files you trust.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..motion import Motion
from ..skeleton import Skeleton

if TYPE_CHECKING:
    from ..audio import AudioFeatureConfig
    from ..config import DataConfig
    from ..representation import FeatureSpec
    from .dataset import ClipCollection

AISTPP_FPS = 60.0
SMPL24_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)  # fmt: skip
SMPL24_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# Rest offsets (metres) of the SMPL neutral body's joints from their parents.
SMPL24_OFFSETS = np.array(
    [
        [0.0, 0.0, 0.0], [0.05858135, -0.08228004, -0.01766408], [-0.06030973, -0.09051332, -0.01354254],
        [0.00443945, 0.12440352, -0.03838522], [0.04345142, -0.38646945, 0.008037],
        [-0.04325663, -0.38368791, -0.00484304], [0.00448844, 0.1379564, 0.02682033],
        [-0.01479032, -0.42687458, -0.037428], [0.01905555, -0.4200455, -0.03456167],
        [-0.00226458, 0.05603239, 0.00285505], [0.04105436, -0.06028581, 0.12204243],
        [-0.03483987, -0.06210566, 0.13032329], [-0.0133902, 0.21163553, -0.03346758],
        [0.07170245, 0.11399969, -0.01889817], [-0.08295366, 0.11247234, -0.02370739],
        [0.01011321, 0.08893734, 0.05040987], [0.12292141, 0.04520509, -0.019046],
        [-0.11322832, 0.04685326, -0.00847207], [0.2553319, -0.01564902, -0.02294649],
        [-0.26012748, -0.01436928, -0.03126873], [0.26570925, 0.01269811, -0.00737473],
        [-0.26910836, 0.00679372, -0.00602676], [0.08669055, -0.01063603, -0.01559429],
        [-0.0887537, -0.00865157, -0.01010708],
    ]
)  # fmt: skip
SPLITS = ("train", "val", "test")


def smpl24_skeleton() -> Skeleton:
    return Skeleton(SMPL24_NAMES, SMPL24_PARENTS, SMPL24_OFFSETS)


@dataclass
class AistClip:
    name: str
    motion: Motion
    music: Path  # the wav of its song (may be missing: checked where music is needed)
    split: str  # train | val | test | "" (not in the official lists)


def music_id(name: str) -> str:
    parts = name.split("_")
    if len(parts) < 5 or not parts[4].startswith("m"):
        raise InputError(
            name, "not an AIST++ motion name (gGENRE_sSITUATION_cCAMERA_dDANCER_mMUSIC_chCHOREO)"
        )
    return parts[4]


def load_aistpp_motion(path: str | Path, fps: float = AISTPP_FPS) -> Motion:
    """One ``motions/*.pkl`` as a Motion on the SMPL skeleton, at ``fps``."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle)  # noqa: S301 - the data set's format (documented above)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        raise InputError(path, f"not a readable AIST++ motion ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a dict with smpl_poses, smpl_trans and smpl_scaling")
    missing = [k for k in ("smpl_poses", "smpl_trans", "smpl_scaling") if k not in data]
    if missing:
        raise InputError(path, f"missing {', '.join(missing)}")
    poses = np.asarray(data["smpl_poses"], dtype=np.float64)
    trans = np.asarray(data["smpl_trans"], dtype=np.float64)
    scaling = float(np.asarray(data["smpl_scaling"], dtype=np.float64).reshape(-1)[0])
    if poses.ndim != 2 or poses.shape[1] != 72 or trans.shape != (len(poses), 3) or len(poses) < 2:
        raise InputError(
            path, f"expected smpl_poses (T, 72) and smpl_trans (T, 3), got {poses.shape}, {trans.shape}"
        )
    if not (np.isfinite(poses).all() and np.isfinite(trans).all() and np.isfinite(scaling) and scaling > 0):
        raise InputError(path, "contains NaN, infinite or non-positive values")
    quats_xyzw = Rotation.from_rotvec(poses.reshape(-1, 3)).as_quat()
    quats = np.roll(quats_xyzw, 1, axis=-1).reshape(len(poses), 24, 4)  # (w, x, y, z)
    motion = Motion(smpl24_skeleton(), quats, trans / scaling, AISTPP_FPS)
    return motion.resample(fps)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_aistpp(root: str | Path, fps: float = AISTPP_FPS) -> list[AistClip]:
    """Every motion of an AIST++ folder not in ``ignore_list.txt``, with its split and song."""
    root = Path(root)
    motions = root / "motions"
    if not motions.is_dir():
        raise InputError(root, "no motions/ folder (is this an AIST++ folder?)")
    ignored = set(_read_list(root / "ignore_list.txt"))
    split_of = {}
    for split in SPLITS:
        for name in _read_list(root / "splits" / f"crossmodal_{split}.txt"):
            split_of[name] = split
    clips = []
    for path in sorted(motions.glob("*.pkl")):
        if path.stem in ignored:
            continue
        motion = load_aistpp_motion(path, fps)
        clips.append(
            AistClip(
                path.stem, motion, root / "wav" / f"{music_id(path.stem)}.wav", split_of.get(path.stem, "")
            )
        )
    if not clips:
        raise InputError(motions, "no .pkl motions")
    return clips


def is_aistpp(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "motions").is_dir() and any((path / "motions").glob("*.pkl"))


def aistpp_spec(fps: float, contact_speed: float) -> FeatureSpec:
    """Features of AIST++ motions: the SMPL tree's own rotations, SMPL's hips and shoulders to face."""
    from ..presets import FACE_JOINTS
    from ..representation import FeatureSpec

    return FeatureSpec(
        skeleton=smpl24_skeleton(),
        fps=fps,
        face_joints=FACE_JOINTS,
        left_foot=("left_ankle", "left_foot"),
        right_foot=("right_ankle", "right_foot"),
        contact_speed=contact_speed,
        facing_smoothing=0.5,
        rotation_source="local",
    )


def build_aistpp_collection(
    cfg: DataConfig, music: AudioFeatureConfig | None = None, cache: str | Path | None = None
) -> tuple[ClipCollection, dict[str, list[str]], Path]:
    """Features of the AIST++ motions (cached) with, given ``music``, their songs' features frame by
    frame (an AIST++ motion starts with its song), and the official split (written beside them)."""
    import hashlib
    import json
    from dataclasses import asdict

    from .._io import atomic_write_json
    from ..audio import song_features, song_stretch
    from ..paths import cache_dir, file_digest
    from ..representation import MotionRepresentation
    from .dataset import ClipCollection

    root = Path(cfg.path)
    clips = [c for c in load_aistpp(root, cfg.fps) if c.split]
    if not clips:
        raise InputError(root, "no motion is in the official splits (splits/crossmodal_*.txt)")
    digests = [[c.name, file_digest(root / "motions" / f"{c.name}.pkl")] for c in clips]
    options = {"fps": cfg.fps, "contact_speed": cfg.contact_speed, "music": asdict(music) if music else None}
    key = hashlib.sha256(json.dumps([digests, options, 1], sort_keys=True).encode()).hexdigest()[:24]
    split = {s: sorted(c.name for c in clips if c.split == s) for s in SPLITS}
    split_path = cache_dir(cache) / "splits" / f"aistpp-{key}.json"
    atomic_write_json(split_path, {"by": "the official crossmodal lists", **split})
    target = cache_dir(cache) / "features" / f"aistpp-{key}.npz"
    if target.is_file():
        return ClipCollection.load(target), split, split_path
    spec = aistpp_spec(cfg.fps, cfg.contact_speed)
    representation = MotionRepresentation(spec)
    features, conditions = [], []
    for clip in clips:
        feats = representation.encode_motion(clip.motion).numpy().astype(np.float32)
        features.append(feats)
        if music is not None:
            song, _ = song_features(clip.music, music, cache)
            conditions.append(song_stretch(song, 0, len(feats), clip.music, cfg.fps))
    collection = ClipCollection.of_clips(
        spec,
        features,
        [c.name for c in clips],
        [
            {"genre": c.name[1:3], "subset": "aist++", "audio": str(c.music), "music_start_seconds": "0"}
            for c in clips
        ],  # fmt: skip
        conditions=conditions if music is not None else None,
    )
    collection.save(target)
    return collection, split, split_path
