"""Music to dance: the keypoint skeleton's sides, training windows that carry their music, the
aligned cross-attention, a whole song danced window after window (seams in-painted), BVH export of
positions-only dances, and `generate --music` on real songs and on bad files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mofusion.bvh import read_bvh
from mofusion.config import DataConfig, DenoiserConfig
from mofusion.dance import seam_jump, window_starts
from mofusion.data.dance_melody import build_dance_collection, load_dance, model_positions
from mofusion.denoiser import CrossAttention1D, MotionUNet1D
from mofusion.presets import DWM_MODEL_PARENTS, DWM_NAMES, dwm_model_positions
from mofusion.representation import MotionRepresentation


def test_model_joints_from_keypoints() -> None:
    keypoints = np.random.default_rng(0).normal(size=(3, 23, 3))
    joints = dwm_model_positions(keypoints)
    assert joints.shape == (3, 25, 3)
    assert np.allclose(joints[:, DWM_NAMES.index("pelvis")], keypoints[:, 2])
    assert np.allclose(joints[:, DWM_NAMES.index("neck")], (keypoints[:, 3] + keypoints[:, 12]) / 2)
    assert np.allclose(joints[:, DWM_NAMES.index("head")], (keypoints[:, 0] + keypoints[:, 1]) / 2)
    assert all(0 <= p < j for j, p in enumerate(DWM_MODEL_PARENTS) if j)


def test_sides_and_floor_from_the_data(small_dances: Path) -> None:
    dance = load_dance(small_dances / "DANCE_W_1")
    joints = model_positions(dance, 25.0)
    rep_names = list(DWM_NAMES)
    feet = [rep_names.index(n) for n in ("left_toe", "left_heel", "right_toe", "right_heel")]
    assert np.median(joints[:, feet, 1].min(axis=1)) == pytest.approx(0.0, abs=1e-9)
    # in the dancer's own frame (+X left, +Z forward) the left hip is left and the toes ahead
    from mofusion.data.dance_melody import DWM_FPS
    from mofusion.presets import dwm_skeleton, dwm_spec

    spec = dwm_spec(dwm_skeleton(np.full(25, 0.1)), DWM_FPS)
    local = (
        MotionRepresentation(spec)
        .local_positions(MotionRepresentation(spec).encode(torch.from_numpy(joints)))
        .numpy()
    )
    index = {n: i for i, n in enumerate(DWM_NAMES)}
    assert (
        np.median(local[:, index["left_hip"], 0]) > 0.05 > -0.05 > np.median(local[:, index["right_hip"], 0])
    )
    ahead = local[:, index["left_toe"], 2] - local[:, index["left_heel"], 2]
    assert np.mean(ahead > 0) > 0.9


def test_windows_carry_their_music(small_dances: Path, session_cache: Path) -> None:
    from mofusion.audio import AudioFeatureConfig, song_features
    from mofusion.data.dataset import WindowSampler

    music = AudioFeatureConfig(fps=25.0)
    collection, split, _ = build_dance_collection(
        DataConfig(path=str(small_dances), fps=25.0), music, session_cache
    )
    assert split["val"] == [] and len(split["train"]) == 1 and "DANCE_C_2" in split["test"]
    assert sorted(split["train"] + split["test"]) == ["DANCE_C_2", "DANCE_W_1", "DANCE_W_3"]
    assert collection.condition is not None and collection.condition.shape == (len(collection.features), 65)
    k = collection.names.index("DANCE_W_1")
    dance = load_dance(small_dances / "DANCE_W_1")
    song, _ = song_features(dance.audio, music, session_cache)
    first = int(round(dance.music_start_seconds * 25))
    assert np.array_equal(collection.clip_condition(k)[:50], song[first : first + 50])
    sampler = WindowSampler(
        torch.from_numpy(collection.features), collection.offsets, 32, torch.from_numpy(collection.condition)
    )
    batch = sampler.sample(4, torch.Generator().manual_seed(0))
    assert batch.cond is not None and batch.cond.shape == (4, 32, 65)
    # every window's music is the music of its own frames
    for row in range(4):
        hits = np.flatnonzero((collection.features == batch.x[row, 0].numpy()).all(axis=1))
        assert np.array_equal(collection.condition[hits[0] : hits[0] + 32], batch.cond[row].numpy())


def test_aligned_attention_prefers_its_own_frames() -> None:
    attention = CrossAttention1D(8, 4, heads=2, groups=2, aligned=True, stride=2)
    bias = attention._distance_bias(3, 6, torch.float32, torch.device("cpu"), None)
    # step i of a stride-2 stage covers frames 2i and 2i+1: its centre is 2i + 0.5
    assert torch.allclose(bias[0, 0, 1], -0.5 * torch.tensor([2.5, 1.5, 0.5, 0.5, 1.5, 2.5]))
    assert torch.allclose(bias[0, 1, 1], -0.125 * torch.tensor([2.5, 1.5, 0.5, 0.5, 1.5, 2.5]))
    masked = attention._distance_bias(
        3, 6, torch.float32, torch.device("cpu"), torch.tensor([[[[True] * 5 + [False]]]])
    )
    assert torch.isinf(masked[0, 0, 0, 5])


def test_music_model_encodes_dropped_and_prepared_conditions_alike() -> None:
    cfg = DenoiserConfig(feature_dim=12, channels=[16, 32], cond_dim=16, heads=2, cond_input_dim=5,
                         cond_aligned=True, cond_pooled=True, dropout=0.0)  # fmt: skip
    model = MotionUNet1D(cfg).eval()
    with torch.no_grad():  # no zero-initialised block: the condition must matter
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, t = torch.randn(2, 12, 16), torch.tensor([3, 500])
    music = torch.randn(2, 16, 5)
    drop = torch.tensor([False, True])
    with torch.no_grad():
        direct = model(x, t, music, None, drop)
        cond, mask = model.prepare_condition(music, None, drop)
        prepared = model(
            x, t, None, None, cache=model.precompute(t[:1], cond, mask, 2), step=torch.tensor([0])
        )
        first = model(x[:1], t[:1], music[:1], None)
        null = model(x[1:], t[1:], None, None)
    assert cond.shape == (2, 16, 16)
    assert torch.allclose(direct[:1], prepared[:1], atol=1e-5) and torch.allclose(
        direct[:1], first, atol=1e-5
    )
    assert torch.allclose(direct[1:], null, atol=1e-5)  # a dropped row reads only the null token
    assert not torch.allclose(direct[:1], model(x[:1], t[:1], None, None), atol=1e-3)  # music matters
    # a sampling runner built for one song, then given another, equals one built for the other
    from mofusion.config import DiffusionConfig
    from mofusion.diffusion import NoiseSchedule, make_sampler
    from mofusion.fast import Acceleration, StepRunner

    sampler = make_sampler(NoiseSchedule(DiffusionConfig(num_steps=50)), "ddpm", 5, 0.0, None)
    other = torch.randn(2, 16, 5)
    outputs = []
    for first in (music, other):
        runner = StepRunner(model, sampler, (2, 12, 16), first, None, 2.0, Acceleration())
        runner.set_condition(other, None)
        outputs.append(runner.run(torch.Generator().manual_seed(0)))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    with pytest.raises(Exception, match="5"):
        model(x, t, torch.randn(2, 16, 7), None)


def test_window_starts_cover_the_song() -> None:
    assert window_starts(128, 128, 64) == [0]
    assert window_starts(129, 128, 64) == [0, 64]
    assert window_starts(300, 128, 64) == [0, 64, 128, 192]


def test_seam_jump_by_hand() -> None:
    p = np.zeros((6, 1, 3))
    p[:, 0, 0] = [0, 1, 2, 3, 5, 7]  # speed 1 then 2: the velocity changes by 1 at frame 3
    at, mean = seam_jump(p, [3])
    assert at == pytest.approx(1.0) and mean == pytest.approx(0.25)


def test_a_song_danced_to_bvh_and_video(tiny_music_model: Path, small_dances: Path, tmp_path: Path) -> None:
    from mofusion.cli import main

    config = json.loads((tiny_music_model / "config.json").read_text())
    assert config["denoiser"]["cond_input_dim"] == 65 and config["denoiser"]["cond_aligned"]
    song = small_dances / "DANCE_W_1" / "audio.mp3"
    out, video = tmp_path / "dance.bvh", tmp_path / "dance.mp4"
    code = main(["generate", "--music", str(song), "--music-start", "10", "--seconds", "5",
                 "-c", str(tiny_music_model), "--out", str(out), "--render", str(video), "-q"])  # fmt: skip
    assert code == 0
    bvh = read_bvh(out)
    assert bvh.num_frames == 125 and bvh.frame_time == pytest.approx(1 / 25)
    assert bvh.skeleton.names[:2] == ("pelvis", "left_hip")
    import imageio_ffmpeg

    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(video)], capture_output=True, text=True
    )
    assert "Audio:" in probe.stderr and "Video:" in probe.stderr


def _wav(path: Path, samples: np.ndarray, rate: int = 22050, subtype: str | None = None) -> Path:
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def test_bad_songs_exit_2_with_one_line_and_no_file(
    tiny_music_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mofusion.cli import main

    t = np.arange(22050 * 3) / 22050
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    good = _wav(tmp_path / "good.wav", tone, subtype="PCM_16").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(good[:40])
    (tmp_path / "text.mp3").write_text("not a song")
    cases = {
        "text.mp3": "cannot read it as audio",
        "truncated.wav": "audio",
        "silence.wav": "silent",
        "short.wav": "1.0 s long",
        "long.wav": "20.0 min long",
        "nan.wav": "NaN",
        "missing.wav": "no such file",
    }
    _wav(tmp_path / "silence.wav", np.zeros(22050 * 3))
    _wav(tmp_path / "short.wav", tone[:22050])
    _wav(tmp_path / "long.wav", np.zeros(20 * 60 * 2000), 2000, "PCM_16")
    _wav(tmp_path / "nan.wav", np.where(np.arange(len(tone)) == 7, np.nan, tone), subtype="FLOAT")
    for name, words in cases.items():
        out = tmp_path / f"{name}.bvh"
        code = main(
            [
                "generate",
                "--music",
                str(tmp_path / name),
                "-c",
                str(tiny_music_model),
                "--out",
                str(out),
                "-q",
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0] and name in err[0], (name, err)
        assert not out.exists()
    # valid songs at other rates and channel counts dance (8 kHz stereo, 96 kHz mono)
    for rate, channels in ((8000, 2), (96000, 1)):
        wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate * 3) / rate)
        song = _wav(
            tmp_path / f"ok{rate}.flac", np.stack([wave] * channels, 1) if channels > 1 else wave, rate
        )
        out = tmp_path / f"ok{rate}.npy"
        assert (
            main(["generate", "--music", str(song), "-c", str(tiny_music_model), "--out", str(out), "-q"])
            == 0
        )
        assert np.load(out).shape == (1, 76, 25, 3)  # 3 s at 25 fps (centred frames)
    # a text prompt, or a model that is not a music model, is refused before anything runs
    assert main(["generate", "--music", str(song), "-t", "a dance", "-c", str(tiny_music_model),
                 "--out", str(tmp_path / "x.bvh")]) == 2  # fmt: skip
    assert "do not go together" in capsys.readouterr().err


def test_rotations_solved_from_positions_pose_the_skeleton_exactly() -> None:
    from mofusion.ik import rotations_from_positions, skeleton_from_positions
    from mofusion.presets import smpl22_skeleton
    from mofusion.rotations import quat_to_matrix
    from mofusion.skeleton import forward_kinematics

    skeleton = smpl22_skeleton()
    quats = torch.nn.functional.normalize(torch.randn(5, 22, 4, dtype=torch.float64), dim=-1)
    root = torch.randn(5, 3, dtype=torch.float64)
    positions, _ = forward_kinematics(skeleton, quat_to_matrix(quats), root)
    rotations, solved_root = rotations_from_positions(skeleton, positions)
    again, _ = forward_kinematics(skeleton, rotations, solved_root)
    assert torch.allclose(again, positions, atol=1e-9)
    # rest offsets read off the motion: lengths kept, branching joints' bones in their median direction
    fitted = skeleton_from_positions(skeleton, positions)
    assert np.allclose(fitted.bone_lengths(), skeleton.bone_lengths())


def test_long_song_windows_hold_and_cross_fade(tiny_music_model: Path) -> None:
    from mofusion.dance import generate_dance
    from mofusion.errors import MofusionError
    from mofusion.pipeline import MotionPipeline

    pipe = MotionPipeline.from_checkpoint(tiny_music_model, "cpu")
    song = np.random.default_rng(0).normal(size=(70, 65)).astype(np.float32)
    (plain,) = generate_dance(pipe, [song], seed=1, steps=3, blend=0)
    (faded,) = generate_dance(pipe, [song, song[:40]], seed=1, steps=3, blend=4)[:1]
    assert plain.features.shape == (70, pipe.spec.dim) and plain.positions.shape == (70, 25, 3)
    # window 32, overlap 16: windows start at 0, 16, 32, 48; seams where new frames meet held ones
    assert plain.seams == [32, 48, 64] and faded.seams == [28, 32, 44, 48, 60, 64]
    assert torch.isfinite(faded.features).all()
    with pytest.raises(MofusionError, match="blend"):
        generate_dance(pipe, [song], steps=2, blend=16)


def test_a_music_pack_trains_without_the_songs(
    small_dances: Path, session_cache: Path, tmp_path: Path
) -> None:
    """`data pack` of dance data: float16 features with their music and the split by dance, enough to
    train where neither the songs nor an audio library are."""
    from mofusion.cli import main

    pack = tmp_path / "dances.npz"
    assert (
        main(["data", "pack", "--data", str(small_dances), "--out", str(pack), "--cache", str(session_cache)])
        == 0
    )
    with np.load(pack) as data:
        assert data["features"].dtype == np.float16 and data["condition"].shape[1] == 65
        meta = json.loads(str(data["meta"]))
    assert meta["music"]["fps"] == 25.0 and "DANCE_C_2" in meta["split"]["test"]
    out = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--data", str(pack), "--out", str(out), "--cache", str(tmp_path / "c"),
                 "--max-steps", "2", "-q", "--set", "condition.kind=music", "--set", "data.fps=25.0"])  # fmt: skip
    assert code == 0
    assert json.loads((out / "split.json").read_text())["train"] == meta["split"]["train"]
    # a model that wants other music features is refused, naming the pack
    code = main(["train", "--preset", "tiny", "--data", str(pack), "--out", str(tmp_path / "r2"), "-q",
                 "--cache", str(tmp_path / "c"), "--set", "condition.kind=music", "--set", "data.fps=25.0",
                 "--set", "condition.music_mels=32"])  # fmt: skip
    assert code == 2


def test_evaluate_dance_table_on_real_dances(tiny_music_model: Path, small_dances: Path, session_cache: Path,
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from mofusion.cli import main

    out = tmp_path / "table.json"
    code = main(["evaluate", "dance", "-c", str(tiny_music_model), "--label", "tiny", "--data", str(small_dances),
                 "--cache", str(session_cache), "--segment-seconds", "10", "--steps", "2", "--max-dances", "2",
                 "-q", "--out", str(out)])  # fmt: skip
    assert code == 0
    table = json.loads(out.read_text())
    names = [r["name"] for r in table["rows"]]
    assert names == ["real test dances", "tiny", "real training segments, test music"]
    real, tiny, baseline = table["rows"]
    assert real["fid_k"] == 0 and real["segments"] == tiny["segments"] == baseline["segments"] >= 3
    assert all(np.isfinite([r["fid_k"], r["fid_g"], r["div_k"], r["bas"]]).all() for r in (tiny, baseline))
    assert tiny["fid_k"] > 0 and 0 <= tiny["bas"] <= 1 and 0.5 < tiny["seam_jump_over_mean_change"] < 5
    # the cha-cha has no training dance here: Div is also given on the waltz's segments alone
    protocol = table["protocol"]
    assert protocol["unseen_genres"] == ["cha-cha"]
    assert 2 <= protocol["segments_seen_genres"] < real["segments"]
    assert all(0 < r["div_k_seen_genres"] and np.isfinite(r["div_g_seen_genres"]) for r in table["rows"])
    printed = capsys.readouterr().out
    assert "FID_k" in printed and "genres with training dances (not cha-cha)" in printed


def test_a_dance_at_another_temperature(
    tiny_music_model: Path, small_dances: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`generate --music --temperature`: the same seed dances differently, the sidecar says which
    temperature made it, and a temperature out of range writes nothing."""
    from mofusion.cli import main

    song = small_dances / "DANCE_W_1" / "audio.mp3"
    common = ["generate", "--music", str(song), "--seconds", "3", "-c", str(tiny_music_model), "-q"]
    dances = {}
    for temperature in ("1", "0.5"):
        out = tmp_path / f"t{temperature}.npy"
        assert main([*common, "--out", str(out), "--temperature", temperature]) == 0
        assert json.loads(Path(f"{out}.json").read_text())["temperature"] == float(temperature)
        dances[temperature] = np.load(out)
    assert not np.allclose(dances["1"], dances["0.5"])
    out = tmp_path / "hot.npy"
    assert main([*common, "--out", str(out), "--temperature", "3"]) == 2
    assert "--temperature must be between 0 and 2" in capsys.readouterr().err and not out.exists()


def test_dance_settings_are_chosen_on_training_dances(
    tiny_music_model: Path, dance_root: Path, session_cache: Path, tmp_path: Path
) -> None:
    """`evaluate dance --split train`: every other training dance is danced and measured, the
    baseline comes from the other training dances, and no test dance is looked at. With
    `--acceleration bf16-all` (the GPU default, here on the CPU) the protocol records it; an
    unknown one is refused in one line."""
    from mofusion.cli import main
    from mofusion.data.dance_melody import dance_split, find_dance_folder, load_dance

    source = find_dance_folder(dance_root, session_cache)
    folder = tmp_path / "dances"
    folder.mkdir()
    for name in ("DANCE_C_2", "DANCE_W_1", "DANCE_W_3", "DANCE_W_4", "DANCE_W_5"):
        (folder / name).symlink_to(source / name)
    split = dance_split([load_dance(folder / n.name) for n in sorted(folder.iterdir())])
    out = tmp_path / "table.json"
    code = main(["evaluate", "dance", "-c", str(tiny_music_model), "--data", str(folder), "--split", "train",
                 "--cache", str(session_cache), "--steps", "2", "--max-dances", "1", "--temperature", "0.5",
                 "--acceleration", "bf16-all", "-q", "--out", str(out)])  # fmt: skip
    assert code == 0
    table = json.loads(out.read_text())
    assert table["protocol"]["test_dances"] == split["train"][:1] and table["protocol"]["split"] == "train"
    assert table["protocol"]["temperature"] == 0.5
    assert "bf16_all=True" in table["protocol"]["acceleration"]
    real, _, baseline = table["rows"]
    assert real["name"].startswith("real training dances") and baseline["name"].startswith("other training")
    assert real["fid_k"] == 0 and baseline["fid_k"] > 0
    bad = main(["evaluate", "dance", "-c", str(tiny_music_model), "--data", str(folder), "--acceleration", "warp",
                "-q", "--out", str(tmp_path / "bad.json")])  # fmt: skip
    assert bad == 2 and not (tmp_path / "bad.json").exists()


def test_mirrored_training_windows(small_dances: Path, session_cache: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """train.mirror_prob: the mirror applied to normalised windows is the exact feature mirror
    (tested against encoding the reflected dance), training runs with it, and a text model is
    refused in one line."""
    from mofusion.cli import main
    from mofusion.config import preset_config
    from mofusion.representation import feature_mirror
    from mofusion.training import Trainer

    cfg = preset_config("tiny").updated(
        {
            "data": {"path": str(small_dances), "fps": 25.0},
            "condition": {"kind": "music"},
            "train": {"mirror_prob": 1.0, "max_steps": 1},
        }  # fmt: skip
    )
    trainer = Trainer(cfg, tmp_path / "run", cache=session_cache, progress=False)
    spec = trainer.dataset.spec
    rep = MotionRepresentation(spec)
    clip = torch.from_numpy(trainer.dataset.collection.clip(0)[:200]).double()
    positions = rep.decode_positions(clip)
    reflected = positions[:, spec.skeleton.mirror_map()] * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    index, sign = feature_mirror(spec)
    assert (
        rep.encode(reflected) - rep.encode(positions)[:, index] * torch.from_numpy(sign)
    ).abs().max() < 1e-9
    batch = trainer.train_windows.sample(4, torch.Generator().manual_seed(0))
    normalizer = trainer.normalizer
    mirror_index, scale, shift = trainer.mirror
    expected = normalizer.normalize(
        normalizer.denormalize(batch.x)[..., index] * torch.from_numpy(sign).float()
    )
    got = batch.x[..., mirror_index] * scale + shift
    assert (got - expected)[batch.mask].abs().max() < 1e-4
    assert torch.isfinite(trainer.train_step()["loss"])
    # refused: a text model (captions name sides), a capture skeleton that is not symmetric at rest
    code = main(["train", "--preset", "tiny", "--data", str(small_dances), "--out", str(tmp_path / "t"), "-q",
                 "--cache", str(session_cache), "--set", "condition.kind=text", "--set", "data.fps=25.0",
                 "--set", "train.mirror_prob=0.5"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "captions name sides" in err[0]


def test_a_music_run_resumes_from_its_own_configuration(
    tiny_music_model: Path, session_cache: Path, tmp_path: Path
) -> None:
    """`train --resume` with neither --preset nor --data: the run's frame rate, window and music
    features are its own (the default configuration has no music and another frame rate)."""
    import shutil

    from mofusion.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_music_model, run_dir)
    code = main(["train", "--resume", str(run_dir), "--out", str(run_dir), "--max-steps", "8",
                 "--cache", str(session_cache), "-q"])  # fmt: skip
    assert code == 0
    latest = run_dir / (run_dir / "latest").read_text().strip()
    config = json.loads((latest / "config.json").read_text())
    assert config["step"] == 8
    assert config["config"]["condition"]["kind"] == "music" and config["config"]["data"]["fps"] == 25.0
