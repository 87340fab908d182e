"""The AIST++ loader on a small folder written in its format by the test: forward kinematics on the
SMPL tree pinned by hand, root in metres, resampling, the official split and the ignore list."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from mofusion.data.aistpp import SMPL24_OFFSETS, load_aistpp, load_aistpp_motion, music_id
from mofusion.errors import InputError

NAMES = ["gBR_sBM_cAll_d04_mBR0_ch01", "gPO_sBM_cAll_d10_mPO1_ch02", "gJS_sBM_cAll_d01_mJS3_ch03"]


def _write_motion(path: Path, poses: np.ndarray, trans: np.ndarray, scaling: float = 95.0) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"smpl_poses": poses, "smpl_trans": trans, "smpl_scaling": np.array([scaling]),
                     "smpl_loss": 0.0}, handle)  # fmt: skip


@pytest.fixture()
def aist(tmp_path: Path) -> Path:
    (tmp_path / "motions").mkdir()
    (tmp_path / "splits").mkdir()
    (tmp_path / "wav").mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        poses = rng.normal(scale=0.2, size=(120, 72))
        trans = np.cumsum(rng.normal(scale=0.5, size=(120, 3)), axis=0) + [0, 90, 0]
        _write_motion(tmp_path / "motions" / f"{name}.pkl", poses, trans)
    (tmp_path / "splits" / "crossmodal_train.txt").write_text(NAMES[0] + "\n")
    (tmp_path / "splits" / "crossmodal_test.txt").write_text(NAMES[1] + "\n" + NAMES[2] + "\n")
    (tmp_path / "ignore_list.txt").write_text(NAMES[2] + "\n")
    return tmp_path


def test_rest_pose_and_a_turned_root_by_hand(tmp_path: Path) -> None:
    poses = np.zeros((2, 72))
    poses[1, 1] = np.pi / 2  # the root turned 90 degrees about +Y in the second frame
    trans = np.array([[95.0, 190.0, 0.0], [0.0, 95.0, 0.0]])
    _write_motion(tmp_path / "m.pkl", poses, trans, scaling=95.0)
    positions = load_aistpp_motion(tmp_path / "m.pkl").positions()
    # rest pose: the left knee is the root plus the hip and knee offsets; the root is trans / scaling
    assert np.allclose(positions[0, 0], [1.0, 2.0, 0.0])
    assert np.allclose(positions[0, 4], [1.0, 2.0, 0.0] + SMPL24_OFFSETS[1] + SMPL24_OFFSETS[4])
    # +90 degrees about Y maps (x, y, z) to (z, y, -x)
    hip = SMPL24_OFFSETS[1]
    assert np.allclose(positions[1, 1], [0.0, 1.0, 0.0] + np.array([hip[2], hip[1], -hip[0]]))


def test_folder_split_ignore_list_and_resampling(aist: Path) -> None:
    clips = load_aistpp(aist, fps=30.0)
    assert [c.name for c in clips] == sorted(NAMES[:2])  # the ignored one is left out
    split = {c.name: c.split for c in clips}
    assert split == {NAMES[0]: "train", NAMES[1]: "test"}
    clip = next(c for c in clips if c.name == NAMES[0])
    assert clip.motion.fps == 30.0 and clip.motion.num_frames == 60  # 120 frames at 60 fps
    assert clip.music == aist / "wav" / "mBR0.wav"
    full = load_aistpp_motion(aist / "motions" / f"{NAMES[0]}.pkl")
    assert np.allclose(clip.motion.positions()[10], full.positions()[20])  # same instant
    assert music_id(NAMES[1]) == "mPO1"


def test_bad_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "x.pkl").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="x.pkl: not a readable AIST"):
        load_aistpp_motion(tmp_path / "x.pkl")
    with open(tmp_path / "y.pkl", "wb") as handle:
        pickle.dump({"smpl_poses": np.zeros((4, 72))}, handle)
    with pytest.raises(InputError, match="missing smpl_trans, smpl_scaling"):
        load_aistpp_motion(tmp_path / "y.pkl")
    _write_motion(tmp_path / "z.pkl", np.full((4, 72), np.nan), np.zeros((4, 3)))
    with pytest.raises(InputError, match="NaN"):
        load_aistpp_motion(tmp_path / "z.pkl")
    with pytest.raises(InputError, match="no motions/ folder"):
        load_aistpp(tmp_path)
    with pytest.raises(InputError, match="not an AIST"):
        music_id("walk_01")


def test_aistpp_trains_a_music_model(aist: Path, tmp_path: Path) -> None:
    """An AIST++ folder is a music data set like dance-with-melody: features at the model's rate,
    each frame with its song's features, the official split; `train --preset` runs on it."""
    import soundfile

    from mofusion.audio import AudioFeatureConfig
    from mofusion.cli import main
    from mofusion.config import DataConfig
    from mofusion.data.dataset import build_music_collection

    t = np.arange(22050 * 3) / 22050
    for name in NAMES:
        soundfile.write(aist / "wav" / f"{music_id(name)}.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 22050)
    cache = tmp_path / "cache"
    music = AudioFeatureConfig(fps=20.0)
    collection, split, _ = build_music_collection(DataConfig(path=str(aist), fps=20.0), music, cache)
    assert split == {"train": [NAMES[0]], "val": [], "test": [NAMES[1]]}
    assert collection.condition is not None and collection.condition.shape == (len(collection.features), 65)
    assert collection.spec.skeleton.num_joints == 24 and len(collection.features) == 2 * 39  # 2 s at 20 fps
    out = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--data", str(aist), "--out", str(out), "--cache", str(cache),
                 "--max-steps", "2", "-q", "--set", "condition.kind=music", "--set", "data.window=32"])  # fmt: skip
    assert code == 0 and (out / "checkpoints").is_dir()
