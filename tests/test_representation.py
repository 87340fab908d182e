"""The feature vector: HumanML3D compatibility on its own sample, and exact round trips on Bandai."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from mofusion.bvh import read_bvh
from mofusion.errors import MofusionError
from mofusion.motion import Motion
from mofusion.presets import bandai_spec, smpl22_humanml3d_spec
from mofusion.representation import (
    FeatureSpec,
    MotionRepresentation,
    Normalizer,
    feature_mirror,
    gaussian_smooth,
)


@pytest.fixture(scope="module")
def hml(humanml3d_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    vecs = np.load(humanml3d_dir / "new_joint_vecs" / "012314.npy")
    joints = np.load(humanml3d_dir / "new_joints" / "012314.npy")
    return torch.from_numpy(vecs), torch.from_numpy(joints)


def test_smpl22_layout_is_humanml3d_263() -> None:
    spec = smpl22_humanml3d_spec()
    assert spec.dim == 263
    assert spec.slices["rotations"] == slice(67, 193) and spec.slices["contacts"] == slice(259, 263)


def test_decoding_humanml3d_features_reproduces_new_joints(hml: tuple[torch.Tensor, torch.Tensor]) -> None:
    vecs, joints = hml
    rep = MotionRepresentation(smpl22_humanml3d_spec())
    # in float32, as the data set computed it: identical to the last bit
    assert torch.equal(rep.decode_positions(vecs.float()), joints.float())
    assert (rep.decode_positions(vecs.double()) - joints.double()).abs().max() < 1e-6


def test_encoding_new_joints_gives_back_the_features(hml: tuple[torch.Tensor, torch.Tensor]) -> None:
    vecs, joints = hml
    rep = MotionRepresentation(smpl22_humanml3d_spec())
    features = rep.encode(joints.double())
    assert features.shape == (169, 263)  # one frame fewer than new_joints, which has 170
    err = (features - vecs[:169].double()).abs()
    # contacts agree on every frame
    assert torch.equal(features[:, 259:], vecs[:169, 259:].double())
    # frames whose smoothing window (4 sigma = 80 frames) does not reach the dropped last frame: float error
    assert err[:90].max() < 2e-5
    # the remaining frames saw the data set's extra frame through the facing smoothing: lossy, but small
    assert err.max() < 0.02


def test_without_the_quirks_the_features_differ(hml: tuple[torch.Tensor, torch.Tensor]) -> None:
    vecs, joints = hml
    data = smpl22_humanml3d_spec().to_dict()
    data["humanml3d_quirks"] = False
    rep = MotionRepresentation(FeatureSpec.from_dict(data))
    assert (rep.encode(joints.double())[:90] - vecs[:90].double()).abs().max() > 0.05


def test_gaussian_smoothing_matches_scipy() -> None:
    x = torch.randn(170, 3, dtype=torch.float64)
    for sigma in (0.5, 3.0, 20.0, 60.0):
        ours = gaussian_smooth(x, sigma, dim=0).numpy()
        theirs = gaussian_filter1d(x.numpy(), sigma, axis=0, mode="nearest")
        assert np.allclose(ours, theirs, atol=1e-12), sigma


@pytest.fixture(scope="module")
def bandai_motion(bandai_clips: list[Path]) -> Motion:
    clip = next(p for p in bandai_clips if "walk-left_happy" in p.name)
    return Motion.from_bvh(read_bvh(clip), scale=0.01).resample(20.0)


def _canonical(positions: np.ndarray, facing: torch.Tensor) -> np.ndarray:
    """Positions moved so the root starts above the origin and turned by the frame-0 facing."""
    from mofusion.rotations import quat_rotate

    shifted = positions - positions[0, 0] * np.array([1.0, 0.0, 1.0])
    q = facing[0].expand(positions.shape[:-1] + (4,))
    return quat_rotate(q, torch.from_numpy(shifted)).numpy()


def test_bandai_round_trip_gives_back_positions_and_rotations(bandai_motion: Motion) -> None:
    spec = bandai_spec(bandai_motion.skeleton, 20.0)
    rep = MotionRepresentation(spec)
    features = rep.encode_motion(bandai_motion)
    assert features.shape == (bandai_motion.num_frames - 1, spec.dim)
    original = bandai_motion.positions()
    facing = rep.facing(torch.from_numpy(original))
    expected = _canonical(original, facing)[:-1]
    # positions from the joint-position block and from FK of the decoded rotations
    assert np.abs(rep.decode_positions(features).numpy() - expected).max() < 1e-9
    decoded = rep.decode_motion(features)
    assert np.abs(decoded.positions() - expected).max() < 1e-9
    # local rotations of every joint but the root are the file's own
    from mofusion.rotations import quat_to_matrix

    ours = quat_to_matrix(torch.from_numpy(decoded.rotations[:, 1:]))
    theirs = quat_to_matrix(torch.from_numpy(bandai_motion.rotations[:-1, 1:]))
    assert (ours - theirs).abs().max() < 1e-9


def test_features_do_not_depend_on_where_the_motion_starts(bandai_motion: Motion) -> None:
    from scipy.spatial.transform import Rotation

    rep = MotionRepresentation(bandai_spec(bandai_motion.skeleton, 20.0))
    turn = Rotation.from_euler("y", 70, degrees=True)
    moved_root = turn.apply(bandai_motion.root_positions) + np.array([3.0, 0.0, -2.0])
    rot = Rotation.from_quat(np.roll(bandai_motion.rotations[:, 0], -1, axis=-1))
    rotations = bandai_motion.rotations.copy()
    rotations[:, 0] = np.roll((turn * rot).as_quat(), 1, axis=-1)
    moved = Motion(bandai_motion.skeleton, rotations, moved_root, bandai_motion.fps)
    a, b = rep.encode_motion(bandai_motion), rep.encode_motion(moved)
    assert (a - b).abs().max() < 1e-9


def test_normalizer_shares_std_within_blocks() -> None:
    x = torch.randn(1000, 6, dtype=torch.float64) * torch.tensor(
        [1.0, 2.0, 3.0, 1.0, 1.0, 5.0], dtype=torch.float64
    )
    norm = Normalizer.fit(x, {"a": slice(0, 3), "b": slice(3, 6)})
    assert torch.allclose(norm.std[:3], norm.std[0].expand(3))
    assert norm.std[0] == pytest.approx(float(x[:, :3].std(0, unbiased=False).mean()), rel=1e-6)
    assert torch.allclose(norm.denormalize(norm.normalize(x.float())), x.float(), atol=1e-5)
    assert (norm.normalize(x.float()).abs() <= norm.bound + 1e-6).all()


def test_spec_serialises(bandai_motion: Motion) -> None:
    spec = bandai_spec(bandai_motion.skeleton, 20.0)
    assert FeatureSpec.from_dict(spec.to_dict()).same_as(spec)


def test_consolidated_positions(bandai_clips: list[Path]) -> None:
    """Exact on consistent (real) features; on features with per-frame position noise it moves
    towards the truth and removes most of the jitter; pinned frames keep their decoded positions."""
    path = next(p for p in bandai_clips if "walk_happy" in p.name)
    clip = Motion.from_bvh(read_bvh(path), scale=0.01).resample(20.0)
    rep = MotionRepresentation(bandai_spec(clip.skeleton, 20.0))
    features = rep.encode_motion(clip)
    truth = rep.decode_positions(features)
    assert torch.equal(rep.decode_positions(features, rep.root_trajectory(features)), truth)
    assert torch.allclose(rep.consolidated_positions(features, 6.0), truth, atol=1e-9)
    noisy = features.clone()
    sl = rep.slices["local_positions"]
    noisy[:, sl] += 0.03 * torch.randn(noisy[:, sl].shape, generator=torch.Generator().manual_seed(0))
    raw = rep.decode_positions(noisy)
    pinned = torch.zeros(len(noisy), dtype=torch.bool)
    pinned[[0, 40]] = True
    fused = rep.consolidated_positions(noisy, 6.0, pinned)
    err_raw, err_fused = (raw - truth).norm(dim=-1).mean(), (fused - truth).norm(dim=-1).mean()
    assert err_fused < 0.5 * err_raw

    def jitter(p: torch.Tensor) -> float:
        return float(p.diff(n=2, dim=0).norm(dim=-1).mean())

    assert jitter(fused) < 0.3 * jitter(raw)
    assert torch.allclose(fused[[0, 40]], raw[[0, 40]], atol=1e-6)


def test_least_squares_path_by_hand() -> None:
    """Anchors 0 and 1, a step of 0, weight w: the minimiser of p0^2 + (p1 - 1)^2 + w (p1 - p0)^2 is
    p0 = w / (1 + 2w), p1 = (1 + w) / (1 + 2w); pinning frame 0 gives p0 = 0, p1 = 1 / (1 + w)."""
    from mofusion.representation import least_squares_path

    w = 3.0
    anchors, steps = np.array([[[0.0], [1.0]]]), np.zeros((1, 1, 1))
    assert least_squares_path(anchors, steps, w)[0, :, 0] == pytest.approx(
        [w / (1 + 2 * w), (1 + w) / (1 + 2 * w)]
    )
    pinned = least_squares_path(anchors, steps, w, np.array([[True, False]]))[0, :, 0]
    assert pinned == pytest.approx([0.0, 1 / (1 + w)], abs=1e-7)
    # three frames whose steps agree with the anchors: unchanged
    line = np.array([[[0.0], [2.0], [4.0]]])
    assert np.allclose(least_squares_path(line, np.full((1, 2, 1), 2.0), 10.0), line)


def test_least_squares_path_smoothing_by_hand() -> None:
    """Frames 0, 1 pinned at 0 and 1, frame 2 anchored at 0, acceleration weight a, no velocity
    term: the minimiser of p2^2 + a (p2 - 2 + 0)^2 is p2 = 2a / (1 + a), pulled from its anchor
    towards the pinned frames' straight continuation (2)."""
    from mofusion.representation import least_squares_path

    a = 4.0
    anchors = np.array([[[0.0], [1.0], [0.0]]])
    out = least_squares_path(anchors, np.zeros((1, 2, 1)), 0.0, np.array([[True, True, False]]), a)
    assert out[0, :, 0] == pytest.approx([0.0, 1.0, 2 * a / (1 + a)], abs=1e-6)


def test_least_squares_path_smoothing_matches_dense_solve() -> None:
    """The banded normal equations against a dense least-squares solve of the stacked residuals."""
    from mofusion.representation import least_squares_path

    rng = np.random.default_rng(0)
    frames, w, a = 9, 2.5, 7.0
    anchors, steps = rng.normal(size=(1, frames, 2)), rng.normal(size=(1, frames - 1, 2))
    pins = np.zeros((1, frames), dtype=bool)
    pins[0, [0, 5]] = True
    eye = np.eye(frames)
    first = eye[1:] - eye[:-1]
    second = eye[2:] - 2 * eye[1:-1] + eye[:-2]
    data = np.where(pins[0], 1e4, 1.0)[:, None] * eye
    matrix = np.concatenate([data, np.sqrt(w) * first, np.sqrt(a) * second])
    for k in range(2):
        rhs = np.concatenate(
            [
                np.where(pins[0], 1e4, 1.0) * anchors[0, :, k],
                np.sqrt(w) * steps[0, :, k],
                np.zeros(frames - 2),
            ]
        )
        dense = np.linalg.lstsq(matrix, rhs, rcond=None)[0]
        banded = least_squares_path(anchors, steps, w, pins, a)[0, :, k]
        assert banded == pytest.approx(dense, abs=1e-5)
        assert banded[[0, 5]] == pytest.approx(anchors[0, [0, 5], k], abs=1e-6)


def test_mirrored_features_are_the_features_of_the_mirror_image(
    hml: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Reflect HumanML3D's own clip (x -> -x, left and right joints swapped) and encode it: the
    features equal the clip's features re-indexed and sign-flipped, with no decoding."""
    _, joints = hml
    spec = smpl22_humanml3d_spec()
    rep = MotionRepresentation(spec)
    mirror = spec.skeleton.mirror_map()
    assert spec.skeleton.names[mirror[spec.skeleton.index("left_wrist")]] == "right_wrist"
    reflected = joints.double()[:, mirror] * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    index, sign = feature_mirror(spec)
    features = rep.encode(joints.double())
    assert (rep.encode(reflected) - features[:, index] * torch.from_numpy(sign)).abs().max() < 1e-9
    # by hand: the yaw velocity and the sideways root velocity change sign, the height does not
    assert sign[0] == -1 and sign[1] == -1 and sign[2] == 1 and sign[3] == 1 and index[3] == 3
    # an involution: mirroring twice gives the features back
    assert np.array_equal(index[index], np.arange(spec.dim)) and np.array_equal(
        sign * sign[index], np.ones(spec.dim)
    )


def test_what_cannot_be_mirrored_is_refused(bandai_motion: Motion) -> None:
    with pytest.raises(MofusionError, match="rest pose is not left/right symmetric"):
        feature_mirror(bandai_spec(bandai_motion.skeleton, 20.0))  # the capture's own, asymmetric T-pose
    data = smpl22_humanml3d_spec().to_dict()
    data["chains"] = [
        [0, 2, 5, 8, 11],
        [0, 1, 4, 7, 10],
        [0, 3, 6, 9, 12, 15],
        [9, 14, 17, 19, 21],
        [9, 13],
        [13, 16, 18, 20],
    ]
    with pytest.raises(MofusionError, match="asymmetric chains"):
        feature_mirror(FeatureSpec.from_dict(data))
