"""The dance-with-melody data set (Tang et al. 2018): 43 ballroom dances with their songs.

Layout (see ``../shared/data/dance-with-melody/README.md``): ``DANCE_{C,R,T,W}_N/`` folders (cha-cha,
rumba, tango, waltz), each with ``skeletons.json`` (23 keypoints in centimetres, Y up, relative to a
per-frame ``center`` that carries the trajectory, 25 fps), ``config.json`` (the music frames the
dance covers) and ``audio.mp3`` (the whole song). The archive is unpacked into the cache, never
next to the data.

The keypoints have no names; :data:`DWM_PARENTS` makes a tree of them rooted at the pelvis (2), with
four virtual joints (23 neck = mid(3, 12), 24 head = mid(0, 1), 25 and 26 the mid-feet), as the
authors' drawing script connects them. Positions are the only data: there are no rotations.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._io import atomic_write_json
from ..errors import InputError
from ..paths import cache_dir, file_digest
from .sources import unpack_archive

if TYPE_CHECKING:
    from ..audio import AudioFeatureConfig
    from ..config import DataConfig
    from .dataset import ClipCollection

DWM_FPS = 25.0
DWM_KEYPOINTS = 23
GENRES = {"C": "cha-cha", "R": "rumba", "T": "tango", "W": "waltz"}
# virtual joints: (index, the two keypoints it is the midpoint of)
DWM_VIRTUAL = ((23, (3, 12)), (24, (0, 1)), (25, (10, 11)), (26, (19, 20)))
DWM_PARENTS = (
    24, 24, -1, 23, 3, 4, 5, 2, 7, 8, 25, 25, 23, 12, 13, 14, 2, 16, 17, 26, 26, 14, 5,  # keypoints 0..22
    2, 23, 9, 18,  # neck, head, mid-foot A, mid-foot B
)  # fmt: skip
TEST_FRACTION = 0.2


@dataclass
class Dance:
    """One dance: world joint positions in metres, its song and where in the song it starts."""

    name: str
    genre: str
    positions: np.ndarray  # (T, 23, 3) metres, Y up
    fps: float
    audio: Path
    music_start_frame: int  # the song frame (at fps) of the dance's first frame

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def music_start_seconds(self) -> float:
        return self.music_start_frame / self.fps


def with_virtual_joints(positions: np.ndarray) -> np.ndarray:
    """``(T, 23, 3)`` keypoints plus the four virtual joints of :data:`DWM_PARENTS` -> ``(T, 27, 3)``."""
    extra = [(positions[:, a] + positions[:, b]) / 2 for _, (a, b) in DWM_VIRTUAL]
    return np.concatenate([positions, np.stack(extra, axis=1)], axis=1)


def find_dance_folder(path: str | Path, cache: str | Path | None = None) -> Path:
    """The folder holding the ``DANCE_*`` folders: ``path`` itself, or its archive unpacked."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir() and any(path.glob("DANCE_*")):
        return path
    archive = path if path.is_file() else next(iter(sorted(path.glob("*.tar.xz"))), None)
    if archive is None:
        raise InputError(path, "neither DANCE_* folders nor a .tar.xz archive of them")
    folder = unpack_archive(archive, file_digest(archive), cache)
    if not any(folder.glob("DANCE_*")):
        raise InputError(archive, "the archive holds no DANCE_* folders")
    return folder


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "missing") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def load_dance(folder: Path) -> Dance:
    """One ``DANCE_X_N`` folder, checked."""
    skeletons = _read_json(folder / "skeletons.json")
    config = _read_json(folder / "config.json")
    try:
        local = np.asarray(skeletons["skeletons"], dtype=np.float64)
        center = np.asarray(skeletons["center"], dtype=np.float64)
        start = int(config["start_position"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(folder, f"unexpected skeletons.json/config.json content ({exc})") from None
    if local.ndim != 3 or local.shape[1:] != (DWM_KEYPOINTS, 3) or center.shape != (len(local), 3):
        raise InputError(folder / "skeletons.json", f"expected ({len(local)}, 23, 3) keypoints and centres")
    if not np.isfinite(local).all() or not np.isfinite(center).all():
        raise InputError(folder / "skeletons.json", "contains NaN or infinite coordinates")
    genre = folder.name.split("_")[1] if folder.name.count("_") >= 2 else "?"
    audio = folder / "audio.mp3"
    if not audio.is_file():
        raise InputError(audio, "missing")
    positions = (local + center[:, None]) * 0.01  # centimetres -> metres
    return Dance(folder.name, GENRES.get(genre, genre), positions, DWM_FPS, audio, start)


def load_dance_with_melody(path: str | Path, cache: str | Path | None = None) -> list[Dance]:
    """Every dance of the data set (folder or archive), sorted by name."""
    root = find_dance_folder(path, cache)
    return [load_dance(folder) for folder in sorted(root.glob("DANCE_*")) if folder.is_dir()]


def dance_split(dances: list[Dance], seed: int = 0) -> dict[str, list[str]]:
    """Split by dance: in every genre a seeded fifth (at least one dance) goes to test, so each
    genre is in the test split (tango, with one dance, only there); the rest trains."""
    split: dict[str, list[str]] = {"train": [], "test": []}
    for genre in sorted({d.genre for d in dances}):
        names = sorted(d.name for d in dances if d.genre == genre)
        order = np.random.default_rng([seed, int(hashlib.sha256(genre.encode()).hexdigest()[:8], 16)])
        shuffled = [names[i] for i in order.permutation(len(names))]
        count = max(1, round(TEST_FRACTION * len(names)))
        split["test"] += sorted(shuffled[:count])
        split["train"] += sorted(shuffled[count:])
    return split


def write_dance_split(dances: list[Dance], cache: str | Path | None = None, seed: int = 0) -> Path:
    """The split, written (atomically) to ``<cache>/splits/dance-with-melody-<key>.json``."""
    split = dance_split(dances, seed)
    key = hashlib.sha256(json.dumps([sorted(d.name for d in dances), seed]).encode()).hexdigest()[:12]
    path = cache_dir(cache) / "splits" / f"dance-with-melody-{key}.json"
    atomic_write_json(path, {"seed": seed, "by": "dance; every genre in test", **split})
    return path


# -- training data: features of the model's skeleton, with the music of every frame ---------------


def is_dance_with_melody(path: str | Path) -> bool:
    """Whether ``path`` is the data set: DANCE_* folders or a folder/archive named after it."""
    path = Path(path)
    if path.is_dir():
        return any(path.glob("DANCE_*")) or any(path.glob("dance-with-melody*.tar.xz"))
    return path.is_file() and path.name.startswith("dance-with-melody") and path.name.endswith(".tar.xz")


def model_positions(dance: Dance, fps: float) -> np.ndarray:
    """The dance's ``(T, 25, 3)`` positions of the model's joints at ``fps``, standing on y = 0.

    The files' heights are relative to an arbitrary centre (the floor lies between 0.08 and 0.4 m
    below the ankles, depending on the dance): the floor is put at the median over frames of the
    lowest toe or heel, since a ballroom dancer always has a foot on the floor.
    """
    from ..motion import resample_positions
    from ..presets import DWM_NAMES, dwm_model_positions

    positions = dwm_model_positions(dance.positions)
    feet = [DWM_NAMES.index(n) for n in ("left_toe", "left_heel", "right_toe", "right_heel")]
    floor = float(np.median(positions[:, feet, 1].min(axis=1)))
    positions = positions - np.array([0.0, floor, 0.0])
    return resample_positions(positions, dance.fps, fps)


def _collection_key(dances: list[Dance], cfg: DataConfig, music: AudioFeatureConfig | None) -> str:
    parts = [[d.name, file_digest(d.audio.parent / "skeletons.json"), d.music_start_frame] for d in dances]
    options = {"fps": cfg.fps, "contact_speed": cfg.contact_speed, "music": asdict(music) if music else None}
    # version 3: the head-side points' rotations both start from the head (mirror-symmetric chains)
    text = json.dumps({"dances": parts, "options": options, "version": 3}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def build_dance_collection(
    cfg: DataConfig,
    music: AudioFeatureConfig | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
) -> tuple[ClipCollection, dict[str, list[str]], Path]:
    """Features of every dance (cached), its split by dance (val empty) and the split's file.

    With ``music``, each feature frame carries the song's features at the same instant
    (``ClipCollection.condition``), computed once per song and cached: training never decodes audio.
    """
    import torch
    from tqdm.auto import tqdm

    from ..audio import song_features, song_stretch
    from ..presets import dwm_skeleton, dwm_spec
    from ..representation import MotionRepresentation
    from .dataset import ClipCollection

    dances = load_dance_with_melody(cfg.path, cache)
    if not dances:
        raise InputError(cfg.path, "holds no DANCE_* folders")
    split = dance_split(dances, cfg.split_seed)
    split_path = write_dance_split(dances, cache, cfg.split_seed)
    full_split = {"train": split["train"], "val": [], "test": split["test"]}
    if music is not None and abs(music.fps - cfg.fps) > 1e-9:
        raise InputError(cfg.path, f"music features at {music.fps} fps for motion at {cfg.fps} fps")
    target = cache_dir(cache) / "features" / f"dance-{_collection_key(dances, cfg, music)}.npz"
    if target.is_file():
        return ClipCollection.load(target), full_split, split_path
    positions = [model_positions(d, cfg.fps) for d in dances]
    # the rest skeleton: median bone lengths over every frame (the captured lengths vary by 1-5 cm)
    parents = np.array(dwm_skeleton(np.ones(25)).parents)
    stacked = np.concatenate(positions)
    lengths = np.median(np.linalg.norm(stacked[:, 1:] - stacked[:, parents[1:]], axis=-1), axis=0)
    spec = dwm_spec(dwm_skeleton(np.concatenate([[0.0], lengths])), cfg.fps, cfg.contact_speed)
    representation = MotionRepresentation(spec)
    features, conditions = [], []
    for dance, joints in tqdm(
        list(zip(dances, positions, strict=True)), desc="encoding dances", unit="dance", disable=not progress
    ):
        feats = representation.encode(torch.from_numpy(joints)).numpy().astype(np.float32)
        if not np.isfinite(feats).all():
            raise InputError(dance.audio.parent, "the dance gives non-finite features")
        features.append(feats)
        if music is not None:
            song, _ = song_features(dance.audio, music, cache)
            first = int(round(dance.music_start_seconds * cfg.fps))
            conditions.append(song_stretch(song, first, len(feats), dance.audio, cfg.fps))
    collection = ClipCollection.of_clips(
        spec,
        features,
        [d.name for d in dances],
        [
            {
                "genre": d.genre,
                "subset": "dance-with-melody",
                "audio": str(d.audio),
                "music_start_seconds": f"{d.music_start_seconds:.6f}",
            }
            for d in dances
        ],  # fmt: skip
        conditions=conditions if music is not None else None,
    )
    collection.save(target)
    return collection, full_split, split_path
