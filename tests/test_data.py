"""Bandai-Namco loading, feature caches keyed by source hashes, splits and windows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mofusion.config import DataConfig
from mofusion.data import dataset as dataset_module
from mofusion.data.dataset import (
    ClipCollection,
    build_collection,
    guess_body_joints,
    load_dataset,
    make_split,
    write_motion_pack,
)
from mofusion.data.sources import discover
from mofusion.errors import InputError
from mofusion.presets import smpl22_skeleton


def test_dataset_1_is_discovered_with_labels(bandai_root: Path, session_cache: Path) -> None:
    sources = discover(bandai_root, ["dataset-1"], session_cache)
    assert len(sources.clips) == 174
    clip = next(c for c in sources.clips if c.name.endswith("dataset-1_walk-left_happy_001"))
    assert clip.labels == {"subset": "dataset-1", "content": "walk-left", "style": "happy"}
    assert not any(
        str(c.path).startswith(str(Path(__file__).parents[1])) for c in sources.clips
    )  # never in the repo
    assert (session_cache / "archives").is_dir()


def test_processed_data_set(bandai_dataset) -> None:  # type: ignore[no-untyped-def]
    c = bandai_dataset.collection
    assert c.num_clips == 174 and c.features.shape[1] == c.spec.dim == 257
    assert c.spec.skeleton.names[0] == "Hips" and c.spec.skeleton.num_joints == 21
    assert c.file_scale == 0.01
    assert c.spec.face_joints == ("UpperLeg_R", "UpperLeg_L", "UpperArm_R", "UpperArm_L")
    assert np.isfinite(c.features).all()


def test_cache_is_reused_and_keyed_by_sources(
    bandai_root: Path, session_cache: Path, monkeypatch: pytest.MonkeyPatch, bandai_dataset
) -> None:  # type: ignore[no-untyped-def]
    def no_processing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(dataset_module, "_process_sources", no_processing)
    again = build_collection(
        DataConfig(path=str(bandai_root), subsets=["dataset-1"]), session_cache, progress=False
    )
    assert np.array_equal(again.features, bandai_dataset.collection.features)
    key = dataset_module._processing_key(["a:1"], DataConfig())
    assert key != dataset_module._processing_key(["a:2"], DataConfig())
    assert key != dataset_module._processing_key(["a:1"], DataConfig(fps=30.0))


def test_split_is_deterministic_disjoint_stratified_and_reused(bandai_dataset, session_cache: Path) -> None:  # type: ignore[no-untyped-def]
    c = bandai_dataset.collection
    split = bandai_dataset.split
    names = [set(split[k]) for k in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert set().union(*names) == set(c.names)
    assert split == make_split(c.names, c.labels, 0, 0.1, 0.1)
    contents_in_test = {lab["content"] for n, lab in zip(c.names, c.labels, strict=True) if n in names[2]}
    assert {"walk", "run", "bow", "dash"} <= contents_in_test
    assert bandai_dataset.split_path.is_file() and bandai_dataset.split_path.is_relative_to(session_cache)
    other = make_split(c.names, c.labels, 1, 0.1, 0.1)
    assert other != split


def test_training_windows(bandai_dataset) -> None:  # type: ignore[no-untyped-def]
    sampler = bandai_dataset.sampler("train", 64)
    batch = sampler.sample(16, torch.Generator().manual_seed(0))
    assert batch.x.shape == (16, 64, 257) and batch.mask.shape == (16, 64)
    assert torch.equal(batch.x[~batch.mask], torch.zeros_like(batch.x[~batch.mask]))
    same = sampler.sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(batch.x, same.x)
    fixed = sampler.fixed()
    assert int(fixed.mask.sum()) == int(sampler.lengths.sum())


def test_class_balanced_windows_by_hand() -> None:
    """Clips of 10, 10, 10 and 70 frames, windows of 10: window counts 1, 1, 1, 7; the first three
    are one class (3 windows), the last another (7)."""
    from mofusion.data.dataset import WindowSampler

    features, offsets, classes = torch.zeros(100, 3), np.array([0, 10, 20, 30, 100]), np.array([0, 0, 0, 1])
    plain = WindowSampler(features, offsets, 10, classes=classes, balance=0.0)
    torch.testing.assert_close(plain.weights, torch.tensor([0.1, 0.1, 0.1, 0.7], dtype=torch.float64))
    equal = WindowSampler(features, offsets, 10, classes=classes, balance=1.0)  # each class half
    torch.testing.assert_close(equal.weights, torch.tensor([1, 1, 1, 3], dtype=torch.float64) / 6)
    half = WindowSampler(features, offsets, 10, classes=classes, balance=0.5)  # 1/sqrt(3) vs 7/sqrt(7)
    raw = torch.tensor([3**-0.5] * 3 + [7**0.5], dtype=torch.float64)
    torch.testing.assert_close(half.weights, raw / raw.sum())


def test_class_balance_draws_rare_contents_more_often(bandai_dataset) -> None:  # type: ignore[no-untyped-def]
    part = bandai_dataset.subset("train")
    share = {}
    for balance in (0.0, 1.0):
        weights = bandai_dataset.sampler("train", 64, class_balance=balance).weights
        totals: dict[str, float] = {}
        for label, w in zip(part.labels, weights.tolist(), strict=True):
            totals[label["content"]] = totals.get(label["content"], 0.0) + w
        share[balance] = totals
    assert max(share[1.0].values()) - min(share[1.0].values()) < 1e-9  # every content alike
    rarest = min(share[0.0], key=share[0.0].get)
    assert share[1.0][rarest] > share[0.0][rarest]


def test_motion_pack_round_trip(
    bandai_root: Path, session_cache: Path, tmp_path: Path, bandai_dataset
) -> None:  # type: ignore[no-untyped-def]
    pack = tmp_path / "pack.npz"
    write_motion_pack(
        DataConfig(path=str(bandai_root), subsets=["dataset-1"]), pack, session_cache, progress=False
    )
    assert pack.stat().st_size < 0.25 * bandai_dataset.collection.features.nbytes
    from_pack = build_collection(DataConfig(path=str(pack)), tmp_path / "cache", progress=False)
    original = bandai_dataset.collection
    assert from_pack.names == original.names
    sl = original.spec.slices["local_positions"]
    assert np.abs(from_pack.features[:, sl] - original.features[:, sl]).max() < 1e-3  # metres
    sample = write_motion_pack(
        DataConfig(path=str(bandai_root), subsets=["dataset-1"]),
        tmp_path / "s.npz",
        session_cache,
        False,
        every=10,
    )
    assert sample.names == original.names[::10]
    # a damaged pack is one clear error naming it, whatever the damage
    raw = pack.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "flipped.npz").write_bytes(raw[:1000] + bytes(b ^ 0xFF for b in raw[1000:3000]) + raw[3000:])
    with np.load(pack) as data:
        arrays = dict(data)
    arrays["largest"] = arrays["largest"].copy()
    arrays["largest"][0, 0] = 7
    np.savez(tmp_path / "bad-index.npz", **arrays)
    arrays["largest"] = arrays["largest"][:-1]
    np.savez(tmp_path / "short.npz", **arrays)
    for name in ("truncated", "flipped", "bad-index", "short"):
        damaged = tmp_path / f"{name}.npz"
        with pytest.raises(InputError, match=f"{name}.npz: (not a readable .npz|a damaged motion pack)"):
            build_collection(DataConfig(path=str(damaged)), tmp_path / "cache", progress=False)


def test_smallest_three_quaternions_round_trip() -> None:
    """Packs keep the three smaller components of each quaternion: the same rotation comes back
    (up to sign) within 1e-4, also for half turns, where the w component is near 0."""
    from scipy.spatial.transform import Rotation

    from mofusion.data.dataset import _from_smallest_three, _smallest_three

    rng = np.random.default_rng(0)
    quats = Rotation.random(2000, random_state=1).as_quat()[:, [3, 0, 1, 2]]  # w first
    half_turns = Rotation.from_euler("y", rng.uniform(179.9, 180.1, (200, 1)), degrees=True).as_quat()
    quats = np.concatenate([quats, half_turns[:, [3, 0, 1, 2]], [[1.0, 0, 0, 0], [0, 0, 0, -1.0]]])
    largest, rest = _smallest_three(quats.reshape(-1, 2, 4))
    assert largest.dtype == np.uint8 and rest.dtype == np.int16 and rest.shape == (len(quats) // 2, 2, 3)
    back = _from_smallest_three(largest, rest).reshape(-1, 4)
    same = np.abs((back * quats).sum(-1))  # |cos(angle / 2)| between them
    assert np.allclose(np.linalg.norm(back, axis=-1), 1.0, atol=1e-6)
    assert np.all(same > np.cos(1e-4 / 2))


def test_empty_and_mixed_folders_are_rejected(tmp_path: Path, bandai_clips: list[Path]) -> None:
    with pytest.raises(InputError, match="no .bvh files"):
        discover(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        discover(tmp_path / "missing")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for clip in bandai_clips[:2]:
        shutil.copy(clip, mixed / clip.name)
    (mixed / "other.bvh").write_text(
        "HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\nCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\n"
        "JOINT Leg\n{\nOFFSET 0 -50 0\nCHANNELS 3 Zrotation Xrotation Yrotation\nEnd Site\n{\nOFFSET 0 -40 0\n}\n}\n}\n"
        "MOTION\nFrames: 3\nFrame Time: 0.1\n" + "0 90 0 0 0 0 0 0 0\n" * 3
    )
    cfg = DataConfig(path=str(mixed), face_joints=["UpperLeg_R", "UpperLeg_L", "UpperArm_R", "UpperArm_L"])
    with pytest.raises(InputError, match="skeleton differs"):
        load_dataset(cfg, tmp_path / "cache", progress=False)


def test_body_joints_are_guessed_from_names() -> None:
    face, left, right = guess_body_joints(smpl22_skeleton())
    assert face == ["right_hip", "left_hip", "right_shoulder", "left_shoulder"]
    assert left[0] == "left_ankle" and right[0] == "right_ankle"


def test_feature_file_can_be_loaded_directly(bandai_dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "features.npz"
    bandai_dataset.collection.save(path)
    loaded = ClipCollection.load(path)
    assert loaded.names == bandai_dataset.collection.names
    assert np.array_equal(loaded.features, bandai_dataset.collection.features)
