"""Editing: masks over the feature vector, body parts, constrained sampling, and the edit commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mofusion.bvh import BvhData, read_bvh
from mofusion.cli import main
from mofusion.config import DiffusionConfig
from mofusion.diffusion import NoiseSchedule, make_generator, make_sampler, sample_loop
from mofusion.editing import (
    BODY_PARTS,
    ChannelTable,
    body_part_joints,
    feature_mask,
    interpolate_known,
    parse_ranges,
    random_masks,
)
from mofusion.errors import MofusionError
from mofusion.presets import bandai_spec, smpl22_humanml3d_spec


@pytest.fixture(scope="module")
def spec(bandai_dataset):  # type: ignore[no-untyped-def]
    return bandai_dataset.spec


def names(spec, part: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {spec.skeleton.names[j] for j in body_part_joints(spec, part)}


def test_body_parts_of_bandai(spec) -> None:  # type: ignore[no-untyped-def]
    assert names(spec, "left-arm") == {"Shoulder_L", "UpperArm_L", "LowerArm_L", "Hand_L"}
    assert names(spec, "head") == {"Neck", "Head"}
    assert names(spec, "lower-body") == {"Hips"} | {
        f"{p}_{s}" for p in ("UpperLeg", "LowerLeg", "Foot", "Toes") for s in "LR"
    }
    assert names(spec, "upper-body") == {"Spine", "Chest"} | names(spec, "head") | names(spec, "arms")
    for part in BODY_PARTS:
        assert body_part_joints(spec, part)
    with pytest.raises(MofusionError, match="unknown body part 'tail'"):
        body_part_joints(spec, "tail")


def test_body_parts_of_smpl() -> None:
    spec = smpl22_humanml3d_spec()
    assert names(spec, "right-arm") == {"right_collar", "right_shoulder", "right_elbow", "right_wrist"}
    assert names(spec, "head") == {"neck", "head"}


def test_channel_table_and_masks(spec) -> None:  # type: ignore[no-untyped-def]
    table = ChannelTable.of(spec)
    sl = spec.slices
    assert (table.joint[sl["root_yaw_velocity"]] == -1).all() and table.step[sl["root_xz_velocity"]].all()
    assert not table.step[sl["local_positions"]].any() and table.step[sl["velocities"]].all()
    hand = spec.skeleton.index("Hand_L")
    frames = torch.tensor([[True, True, False, False, True]])
    mask = feature_mask(table, frames)[0]
    pose, step = ~table.step, table.step
    assert mask[0, pose].all() and mask[0, step].all()  # frames 0 and 1 both known
    assert mask[1, pose].all() and not mask[1, step].any()  # the step out of frame 1 leads into the gap
    assert not mask[2].any() and not mask[3].any()
    assert mask[4, pose].all() and not mask[4, step].any()  # the last frame has no next frame
    joints = torch.zeros(1, spec.num_joints, dtype=torch.bool)
    joints[0, hand] = True
    by_joint = feature_mask(table, torch.zeros(1, 5, dtype=torch.bool), joints)[0]
    assert by_joint[:, table.joint == hand].all() and not by_joint[:, table.joint != hand].any()
    traj = feature_mask(table, torch.zeros(1, 5, dtype=torch.bool), trajectory=torch.tensor([True]))[0]
    assert traj[:, table.joint == -1].all() and not traj[:, table.joint >= 0].any()


def test_random_masks(spec) -> None:  # type: ignore[no-untyped-def]
    masks = random_masks(
        ChannelTable.of(spec), spec, 400, 40, torch.Generator().manual_seed(0), unconditional=0.25
    )
    assert masks.shape == (400, 40, spec.dim)
    empty = (~masks.flatten(1).any(1)).float().mean()
    assert 0.15 < float(empty) < 0.35


def test_context_keyframe_masks(spec) -> None:  # type: ignore[no-untyped-def]
    """The LAFAN1-style kind: one run of 1-10 known frames (40 frames: a quarter) and one known
    frame after a gap, nothing known after that frame; weights pick the kind."""
    table = ChannelTable.of(spec)
    masks = random_masks(
        table, spec, 300, 40, torch.Generator().manual_seed(1), unconditional=0.0,
        weights=[0, 0, 0, 0, 0, 1],
    )  # fmt: skip
    pose = ~table.step
    known_frames = masks[:, :, pose].all(-1).numpy()
    for row in known_frames:
        runs = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
        starts, stops = runs[::2], runs[1::2]
        assert len(starts) == 2 and stops[1] - starts[1] == 1  # a context run and one keyframe
        assert 1 <= stops[0] - starts[0] <= 10 and starts[1] > stops[0]
        assert not row[stops[1] :].any()
    assert known_frames[:, 0].mean() > 0.4  # half of the contexts open the window
    weighted = random_masks(
        table, spec, 300, 40, torch.Generator().manual_seed(1), unconditional=0.0,
        weights=[0, 0, 0, 0, 1, 0],
    )  # fmt: skip
    assert weighted[:, :, table.joint == -1].all() and not weighted[:, :, table.joint >= 0].any()


def test_parse_joints(spec) -> None:  # type: ignore[no-untyped-def]
    from mofusion.editing import parse_joints

    assert {spec.skeleton.names[j] for j in parse_joints(spec, "head,Hand_R")} == {"Neck", "Head", "Hand_R"}
    with pytest.raises(MofusionError, match="unknown body part 'Tail'"):
        parse_joints(spec, "head,Tail")


def test_parse_ranges() -> None:
    assert np.flatnonzero(parse_ranges("0-2, 5", 8)).tolist() == [0, 1, 2, 5]
    for text, message in [
        ("0-10", "outside the clip"),
        ("3-1", "runs backwards"),
        ("0-3,2-5", "overlap"),
        ("", "empty"),
        ("0-2,,4", "empty range"),
        ("a-b", "not a frame"),
    ]:
        with pytest.raises(MofusionError, match=message):
            parse_ranges(text, 8)


def test_interpolation_of_known_values_by_hand() -> None:
    values = torch.tensor([[[0.0, 9, 9, 3, 9, 9, 9, 6, 9, 9], [9.0] * 10, [9.0, 2, 9, 9, 9, 9, 9, 9, 9, 9]]])
    known = torch.zeros(values.shape, dtype=torch.bool)
    known[0, 0, [0, 3, 7]] = True
    known[0, 2, 1] = True
    out = interpolate_known(values, known)
    assert torch.allclose(out[0, 0], torch.tensor([0.0, 1, 2, 3, 3.75, 4.5, 5.25, 6, 6, 6]))
    assert torch.equal(out[0, 1], torch.zeros(10))  # never known: the normalised mean
    assert torch.equal(out[0, 2], torch.full((10,), 2.0))  # held before and after its one known frame
    assert torch.equal(out[known], values[known])


def test_clipping_a_residual_clips_the_motion() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100))
    sampler = make_sampler(schedule, "ddim", 10, clip=torch.tensor([1.0, 2.0]))
    sampler.clip_offset = torch.tensor([[[0.5], [-3.0]]])
    eps = torch.zeros(1, 2, 1)
    c = sampler.coefficients(5)
    x_t = torch.tensor([[[4.0], [4.0]]]) * c.sqrt_ab  # with eps 0: a residual estimate of 4
    x0, _ = sampler._estimate(eps, x_t, c.sqrt_ab, c.sqrt_one_minus_ab)
    # residual 4 on base 0.5 is clipped to motion 1.0 (residual 0.5); on base -3 the motion is 1.0 < 2
    assert torch.allclose(x0 + sampler.clip_offset, torch.tensor([[[1.0], [4.0 - 3.0]]]), atol=1e-5)


def test_replacement_returns_the_known_values_exactly() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_steps=100))
    value = torch.randn(2, 3, 12)
    mask = torch.rand(2, 3, 12) < 0.4
    for kind in ("ddpm", "ddim", "dpm", "dpm-sde"):
        out = sample_loop(lambda x, t: torch.tanh(x) * 0.3, make_sampler(schedule, kind, 20), (2, 3, 12),
                          make_generator(0), replace_mask=mask, replace_value=value)  # fmt: skip
        assert torch.equal(out[mask], value[mask])
        assert not torch.allclose(out[~mask], value[~mask])


def bandai_clip(bandai_clips: list[Path], key: str) -> Path:
    return next(p for p in bandai_clips if key in p.name)


def run_task(capsys: pytest.CaptureFixture[str], command: str, source: Path, checkpoint: Path, out: Path,
             *options: str) -> tuple[BvhData, BvhData]:  # fmt: skip
    """``mofusion continue|edit`` on a BVH; returns the input and the written result."""
    code = main([command, "-i", str(source), "-c", str(checkpoint), "-o", str(out), "-q", *options])
    assert code == 0, capsys.readouterr().err
    return read_bvh(source), read_bvh(out)


def test_inbetweening_keeps_the_known_frames_verbatim(
    tiny_run: Path, bandai_clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = bandai_clip(bandai_clips, "walk_happy")
    before, after = run_task(capsys, "edit", source, tiny_run, tmp_path / "edit.bvh", "--keep", "0-20,70-99")
    assert after.num_frames == before.num_frames and after.channels == before.channels
    kept = np.r_[0:21, 70:100]
    assert np.array_equal(after.values[kept], before.values[kept])  # same values to print precision
    assert not np.allclose(after.values[30:60], before.values[30:60])
    assert np.isfinite(after.values).all()


def test_continuation_appends_after_the_untouched_input(
    tiny_run: Path, bandai_clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = bandai_clip(bandai_clips, "bow_old")
    video = tmp_path / "more.mp4"
    before, after = run_task(capsys, "continue", source, tiny_run, tmp_path / "more.bvh",
                             "--seconds", "1", "--render", str(video))  # fmt: skip
    assert after.num_frames == before.num_frames + 30  # 1 s at the input's 30 fps
    assert np.array_equal(after.values[: before.num_frames], before.values)
    assert video.stat().st_size > 0


def test_body_part_regeneration_keeps_the_other_joints(
    tiny_run: Path, bandai_clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = bandai_clip(bandai_clips, "punch")
    before, after = run_task(
        capsys, "edit", source, tiny_run, tmp_path / "arms.bvh", "--regenerate", "upper-body"
    )
    pos_before, pos_after = before.positions(), after.positions()
    legs = [before.skeleton.index(n) for n in ("UpperLeg_L", "LowerLeg_R", "Toes_L", "Hips")]
    assert np.abs(pos_after[:, legs] - pos_before[:, legs]).max() < 1e-3  # cm, up to print precision
    hand = before.skeleton.index("Hand_L")
    assert np.abs(pos_after[:, hand] - pos_before[:, hand]).max() > 1.0


def test_positions_input(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated = tmp_path / "g.npy"
    assert main(["generate", "-c", str(tiny_run), "--seconds", "2", "-o", str(generated), "-q"]) == 0
    out = tmp_path / "e.npy"
    code = main(
        ["edit", "-i", str(generated), "-c", str(tiny_run), "--keep", "0-9,30-39", "-o", str(out), "-q"]
    )
    assert code == 0, capsys.readouterr().err
    before, after = np.load(generated)[0], np.load(out)[0]
    kept = np.r_[0:10, 30:40]
    assert np.array_equal(after[kept], before[kept].astype(np.float32))


def test_a_mask_conditioned_model_edits(
    tiny_masked_run: Path, bandai_clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mofusion.pipeline import MotionPipeline

    assert MotionPipeline.from_checkpoint(tiny_masked_run).edit_method == "both"
    source = bandai_clip(bandai_clips, "walk_happy")
    for method in ("condition", "both"):
        before, after = run_task(capsys, "edit", source, tiny_masked_run, tmp_path / f"{method}.bvh",
                                 "--keep", "0-20,70-99", "--method", method)  # fmt: skip
        assert np.array_equal(after.values[:21], before.values[:21])


def test_an_interpolation_residual_model_edits(
    tiny_residual_run: Path, bandai_clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = bandai_clip(bandai_clips, "walk_happy")
    for method in ("condition", "both"):
        before, after = run_task(capsys, "edit", source, tiny_residual_run, tmp_path / f"{method}.bvh",
                                 "--keep", "0-20,70-99", "--method", method)  # fmt: skip
        assert np.array_equal(after.values[:21], before.values[:21])
        assert np.array_equal(after.values[70:100], before.values[70:100])
        assert np.isfinite(after.values).all()
    # pasting alone would hand the model a residual without the base it is relative to
    out = tmp_path / "replace.bvh"
    code = main(["edit", "-i", str(source), "-c", str(tiny_residual_run), "-o", str(out), "-q",
                 "--keep", "0-20,70-99", "--method", "replace"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "use --method both or condition" in err[0], err
    assert not out.exists()


def _gap_request(spec, dataset):  # type: ignore[no-untyped-def]
    """The first clip's first 40 frames with frames 0-9 and 30 known: features, channel table, mask."""
    features = torch.from_numpy(dataset.collection.features[:40]).float()
    table = ChannelTable.of(spec)
    frames = torch.zeros(40, dtype=torch.bool)
    frames[:10] = True
    frames[30] = True
    return features, table, feature_mask(table, frames[None])[0]


def test_a_zero_residual_samples_the_interpolation(tiny_residual_run: Path, bandai_dataset) -> None:  # type: ignore[no-untyped-def]
    """A denoiser whose every x_0 estimate is a zero residual: the sample is the interpolation."""
    from mofusion.pipeline import MotionPipeline

    # the plain loop calls the replaced forward as written (the step runner's model takes its
    # sampling tables; tests/test_fast.py pins the runner's edits against this loop)
    pipe = MotionPipeline.from_checkpoint(tiny_residual_run, acceleration="none")
    ab = pipe.schedule.alpha_bar

    def zero_residual(x, t, cond=None, cond_mask=None, drop=None, known=None, known_mask=None):  # type: ignore[no-untyped-def]
        return x / (1 - ab[t]).sqrt()[:, None, None]

    pipe.model.forward = zero_residual  # type: ignore[method-assign]
    features, table, known_mask = _gap_request(pipe.spec, bandai_dataset)
    out = pipe.generate(1, 40, sampler="ddim", steps=10, known=features[None], known_mask=known_mask[None],
                        method="condition")  # fmt: skip
    pose = ~table.step
    got, want = out.features[0][:, pose], features[:, pose]
    assert torch.allclose(got[:10], want[:10], atol=1e-4) and torch.allclose(got[30], want[30], atol=1e-4)
    assert torch.allclose(got[20], want[9] + (want[30] - want[9]) * 11 / 21, atol=1e-4)
    assert torch.allclose(got[35], want[30], atol=1e-4)  # held after the last known frame


def test_a_sample_predicting_residual_model_trains_and_edits(
    bandai_root: Path,
    session_cache: Path,
    bandai_clips: list[Path],
    bandai_dataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # type: ignore[no-untyped-def]
    """``diffusion.prediction=sample``: trained, saved, loaded and sampled as such end to end."""
    from mofusion.pipeline import MotionPipeline

    run = tmp_path / "tiny-sample"
    code = main(["train", "--preset", "tiny", "--data", str(bandai_root), "--subset", "dataset-1",
                 "--out", str(run), "--cache", str(session_cache), "--max-steps", "4", "-q",
                 "--set", "denoiser.mask_conditioning=True", "--set", "denoiser.interpolation_residual=True",
                 "--set", "diffusion.prediction=sample"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    source = bandai_clip(bandai_clips, "walk_happy")
    before, after = run_task(capsys, "edit", source, run, tmp_path / "edit.bvh", "--keep", "0-20,70-99")
    assert np.array_equal(after.values[:21], before.values[:21]) and np.isfinite(after.values).all()
    # a network that predicts a zero residual at every step samples the interpolation exactly
    pipe = MotionPipeline.from_checkpoint(run)
    assert pipe.schedule.prediction == "sample"
    pipe.model.forward = lambda x, *args, **kwargs: torch.zeros_like(x)  # type: ignore[method-assign]
    features, table, known_mask = _gap_request(pipe.spec, bandai_dataset)
    for sampler in ("ddpm", "ddim", "dpm-sde"):
        out = pipe.generate(1, 40, sampler=sampler, steps=10, known=features[None], known_mask=known_mask[None],
                            method="condition")  # fmt: skip
        pose = ~table.step
        got, want = out.features[0][:, pose], features[:, pose]
        assert torch.allclose(got[20], want[9] + (want[30] - want[9]) * 11 / 21, atol=1e-4), sampler


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--keep", "0-500"], "outside the clip"),
        (["--keep", "0-10,5-20"], "overlap"),
        (["--keep", ""], "empty"),
        (["--regenerate", "tail"], "unknown body part"),
        (["--keep", "0-5", "--method", "condition"], "not trained with masks"),
        (["--keep", "0-5", "--method", "magic"], "--method must be"),
        ([], "say what to keep"),
    ],
)
def test_bad_edits_give_one_line_and_write_nothing(
    extra: list[str],
    message: str,
    tiny_run: Path,
    bandai_clips: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = bandai_clip(bandai_clips, "walk_happy")
    out = tmp_path / "out.bvh"
    code = main(["edit", "-i", str(source), "-c", str(tiny_run), "-o", str(out), "-q", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_inputs_of_another_skeleton_or_too_short(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.bvh"
    other.write_text(
        "HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\nCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\n"
        "JOINT Leg\n{\nOFFSET 0 -50 0\nCHANNELS 3 Zrotation Xrotation Yrotation\nEnd Site\n{\nOFFSET 0 -40 0\n}\n}\n}\n"
        "MOTION\nFrames: 3\nFrame Time: 0.1\n" + "0 90 0 0 0 0 0 0 0\n" * 3
    )
    code = main(["continue", "-i", str(other), "-c", str(tiny_run), "-o", str(tmp_path / "o.bvh"), "-q"])
    assert code == 2 and "is not the model's" in capsys.readouterr().err
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((1, 21, 3), dtype=np.float32))
    meta = tmp_path / "g.npy.json"
    assert main(["generate", "-c", str(tiny_run), "--seconds", "1", "-o", str(tmp_path / "g.npy"), "-q"]) == 0
    short.with_suffix(".npy.json").write_text(meta.read_text())
    code = main(["continue", "-i", str(short), "-c", str(tiny_run), "-o", str(tmp_path / "o.npy"), "-q"])
    assert code == 2 and "at least 2 are needed" in capsys.readouterr().err


def test_inbetween_benchmark_runs(
    tiny_run: Path, bandai_root: Path, session_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    out = tmp_path / "bench.json"
    code = main(["evaluate", "inbetween", "-c", str(tiny_run), "--label", "tiny", "--data", str(bandai_root),
                 "--max-windows", "6", "--steps", "5", "--cache", str(session_cache), "-o", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    table = json.loads(out.read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert set(rows) == {"real", "zero-velocity", "interpolation", "tiny"}
    for n in (5, 15, 30, 45):
        assert rows["interpolation"][f"L2P@{n}"] > 0 and rows["tiny"][f"NPSS@{n}"] >= 0
    assert rows["real"]["jump@5"] == pytest.approx(1.0, abs=0.6)
    assert rows["tiny"]["sampling"] == {"sampler": "ddpm", "steps": 5, "last_step": 0, "temperature": 1.0,
                                        "smoothing_weight": 0.0, "velocity_weight": 16.0}  # fmt: skip


def test_trajectory_alignment_undoes_a_rigid_move(bandai_clips: list[Path]) -> None:
    from scipy.spatial.transform import Rotation

    from mofusion.editing import align_trajectory
    from mofusion.motion import Motion
    from mofusion.representation import MotionRepresentation

    motion = (
        Motion.from_bvh(read_bvh(bandai_clip(bandai_clips, "walk_happy")), scale=0.01)
        .resample(20.0)
        .slice(0, 60)
    )
    rep = MotionRepresentation(bandai_spec(motion.skeleton, 20.0))
    turn = Rotation.from_euler("y", 50, degrees=True)
    rotations = motion.rotations.copy()
    rotations[:, 0] = np.roll(
        (turn * Rotation.from_quat(np.roll(rotations[:, 0], -1, axis=-1))).as_quat(), 1, axis=-1
    )
    moved = Motion(
        motion.skeleton, rotations, turn.apply(motion.root_positions) + np.array([2.0, 0.0, -1.0]), 20.0
    )
    known = np.zeros(60, dtype=bool)
    known[[0, 59]] = True
    aligned = align_trajectory(moved, motion.positions(), known, rep)
    assert np.abs(aligned.positions() - motion.positions()).max() < 1e-6


def test_eased_interp_meets_each_point_flat() -> None:
    """Knots exact, held outside, midpoint of a segment as linear, zero slope at every knot."""
    from mofusion.editing import eased_interp

    xp, fp = np.array([2.0, 6.0, 8.0]), np.array([1.0, 5.0, -1.0])
    assert eased_interp(xp, xp, fp) == pytest.approx(fp)
    assert eased_interp(np.array([0.0, 10.0]), xp, fp) == pytest.approx([1.0, -1.0])
    assert eased_interp(np.array([4.0, 7.0]), xp, fp) == pytest.approx([3.0, 2.0])
    h = 1e-4
    for x in (2.0, 6.0, 8.0):
        for side in (-h, h):
            assert abs(float(eased_interp(np.array([x + side]), xp, fp)[0]) - fp[xp == x][0]) < 1e-6
    # by hand: a quarter of the way from 1 to 5 the smoothstep is 3/16 - 2/64 = 0.15625
    assert float(eased_interp(np.array([3.0]), xp, fp)[0]) == pytest.approx(1.0 + 4.0 * 0.15625)


def test_edit_without_a_checkpoint_uses_the_packaged_editing_model(
    bandai_clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The packaged editing model (trained with masks) fills in a gap; the sidecar names it."""
    import json

    from mofusion.checkpoint import default_checkpoint
    from mofusion.pipeline import MotionPipeline

    assert MotionPipeline.from_checkpoint(default_checkpoint(edit=True)).edit_method == "both"
    source = bandai_clip(bandai_clips, "walk_happy")
    out = tmp_path / "filled.npy"
    code = main(["edit", "-i", str(source), "--keep", "0-20,60-80", "--steps", "5", "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["checkpoint"] == "packaged editing model"
    assert sidecar["temperature"] == 0.15  # the packaged model's, chosen on validation windows
    assert np.isfinite(np.load(out)).all()
    # --temperature overrides it (recorded, and the step noise changes the frames in the gap)
    warm = tmp_path / "warm.npy"
    code = main(["edit", "-i", str(source), "--keep", "0-20,60-80", "--steps", "5", "--temperature", "1",
                 "-o", str(warm), "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads(warm.with_name(warm.name + ".json").read_text())["temperature"] == 1.0
    assert not np.allclose(np.load(warm), np.load(out))
    bad = tmp_path / "bad.npy"
    code = main(
        ["edit", "-i", str(source), "--keep", "0-20,60-80", "--temperature", "3", "-o", str(bad), "-q"]
    )
    assert code == 2 and "--temperature must be between 0 and 2" in capsys.readouterr().err
    assert not bad.exists()


def test_inbetween_benchmark_on_the_validation_split(
    tiny_run: Path, bandai_root: Path, session_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--split val measures validation windows (to choose settings on); anything else is refused."""
    import json

    common = ["evaluate", "inbetween", "-c", str(tiny_run), "--data", str(bandai_root), "--max-windows", "3",
              "--steps", "2", "--cache", str(session_cache)]  # fmt: skip
    assert main([*common, "--split", "train"]) == 2
    assert "--split must be test or val" in capsys.readouterr().err
    out = tmp_path / "val.json"
    assert main([*common, "--split", "val", "-o", str(out)]) == 0, capsys.readouterr().err
    table = json.loads(out.read_text())
    assert table["split"] == "val" and table["windows"] == 3
    assert "3 val windows" in capsys.readouterr().out
