"""End to end through the command line: train a tiny model on real data, generate, export, render;
and one clear line with exit status 2 for bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest

from mofusion.bvh import read_bvh
from mofusion.cli import main

BAD_BVH = "HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0 0\n  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation\n}\n"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("train", "generate", "render", "export", "data", "evaluate"):
        assert command in out


def test_every_option_says_what_it_does() -> None:
    """`mofusion CMD --help` explains every option: none is listed bare."""
    import typer.main

    from mofusion.cli import app

    def bare(command: Any, name: str) -> list[str]:  # a command, or a group with .commands
        if hasattr(command, "commands"):
            return [o for sub, c in command.commands.items() for o in bare(c, f"{name} {sub}")]
        return [f"{name} {p.opts[0]}" for p in command.params if not getattr(p, "help", None)]

    commands = typer.main.get_command(app)
    assert len(getattr(commands, "commands", {})) >= 8
    assert bare(commands, "mofusion") == []


def test_train_writes_a_run(tiny_run: Path) -> None:
    assert (tiny_run / "latest").is_file() and (tiny_run / "metrics.jsonl").is_file()
    assert json.loads((tiny_run / "split.json").read_text())["test"]
    lines = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 12 and "val_loss" in lines[-1]


def test_generate_bvh_that_pybvh_reads(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pybvh = pytest.importorskip("pybvh")
    generate = ["generate", "-c", tiny_run, "--seconds", "2", "-n", "2", "--seed", "3", "-q"]
    code, out, _ = run(capsys, *generate, "-o", tmp_path / "s.bvh")
    assert code == 0
    files = sorted(tmp_path.glob("s_*.bvh"))
    assert [f.name for f in files] == ["s_000.bvh", "s_001.bvh"]
    data = read_bvh(files[0])
    assert data.num_frames == 40 and data.skeleton.names[0] == "Hips" and np.isfinite(data.values).all()
    theirs = pybvh.read_bvh_file(files[0], world_up="+y").joint_positions()
    assert np.abs(theirs - data.positions()).max() < 1e-3
    # the same seed gives the same motion
    run(capsys, *generate, "-o", tmp_path / "again.bvh")
    assert (tmp_path / "again_000.bvh").read_text() == files[0].read_text()


def test_generate_positions_and_render(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, video = tmp_path / "p.npy", tmp_path / "p.mp4"
    code, _, _ = run(
        capsys, "generate", "-c", tiny_run, "--seconds", "1.5", "-n", "3", "-o", out, "--render", video, "-q"
    )
    assert code == 0
    positions = np.load(out)
    assert positions.shape == (3, 30, 21, 3) and np.isfinite(positions).all()
    meta = json.loads(out.with_suffix(".npy.json").read_text())
    assert meta["fps"] == 20.0 and meta["joint_names"][0] == "Hips"
    reader = imageio_ffmpeg.read_frames(str(video))
    info = next(reader)
    frames = [np.frombuffer(f, np.uint8) for f in reader]
    assert info["fps"] == 20 and len(frames) == 30
    assert not np.array_equal(frames[0], frames[-1])
    code, _, _ = run(capsys, "render", out, tmp_path / "again.gif")
    assert code == 0 and (tmp_path / "again.gif").stat().st_size > 1000


def test_export_half_precision(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "export", "-c", tiny_run, "-o", tmp_path / "small", "--half")
    assert code == 0
    code, _, _ = run(
        capsys, "generate", "-c", tmp_path / "small", "--seconds", "1", "-o", tmp_path / "x.npy", "-q"
    )
    assert code == 0
    # an export may say where the data lives (a run trained from a pack) but not change the model
    code, _, _ = run(
        capsys, "export", "-c", tiny_run, "-o", tmp_path / "moved", "--set", "data.path=/elsewhere"
    )
    assert code == 0
    assert (
        json.loads((tmp_path / "moved" / "config.json").read_text())["config"]["data"]["path"] == "/elsewhere"
    )
    code, _, err = run(capsys, "export", "-c", tiny_run, "-o", tmp_path / "no", "--set", "data.window=40")
    assert code == 2 and "changes only sampling defaults (sample.*) and data.path" in err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "{bad}", "{tmp}/out.mp4"], "bad.bvh: line 5: CHANNELS says 6 but lists 5"),
        (["render", "{tmp}/missing.bvh", "{tmp}/out.mp4"], "missing.bvh: no such file"),
        (["render", "{bad}", "{tmp}/out.avi"], "unsupported output format"),
        (["train", "--preset", "tiny", "--data", "{empty}", "--out", "{tmp}/run"], "no .bvh files found"),
        (
            ["train", "--data", "{empty}", "--out", "{tmp}/run", "--set", "train.lr=-1"],
            "train.lr must be positive",
        ),
        (["generate", "-c", "{tmp}/nothing", "-o", "{tmp}/out.bvh"], "no such checkpoint"),
        (["generate", "-c", "{run}", "-o", "{tmp}/out.bvh", "--seconds", "0"], "--seconds must be positive"),
        (["generate", "-c", "{run}", "-o", "{tmp}/out.bvh", "--seconds", "100000"], "more than the 600 s"),
        (["generate", "-c", "{run}", "-o", "{tmp}/out.bvh", "-n", "0"], "--num-samples must be between"),
        (["generate", "-c", "{run}", "-o", "{tmp}/out.bvh", "--steps", "0"], "steps must be between 1 and"),
        (["render", "{void}", "{tmp}/out.mp4"], "void.npy: cannot read joint positions (EOFError"),
        (["continue", "-c", "{run}", "-i", "{void}", "-o", "{tmp}/o.bvh"], "void.npy: cannot read joint"),
    ],
)
def test_bad_input_gives_one_line_and_status_2(
    args: list[str], message: str, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.bvh"
    bad.write_text(BAD_BVH)
    empty = tmp_path / "empty"
    empty.mkdir()
    void = tmp_path / "void.npy"  # an empty file (numpy raises EOFError, which click turns into "Aborted!")
    void.write_bytes(b"")
    values = {"bad": bad, "tmp": tmp_path, "empty": empty, "run": tiny_run, "void": void}
    before = set(tmp_path.rglob("*"))
    code, out, err = run(capsys, *[a.format(**values) for a in args])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mofusion: error: "), err
    assert message in lines[0]
    assert set(tmp_path.rglob("*")) == before  # nothing written


def test_a_checkpoint_of_another_skeleton_is_refused(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    text = ("HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\nCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\n"
            "JOINT UpLeg_L\n{\nOFFSET 10 -10 0\nCHANNELS 3 Zrotation Xrotation Yrotation\nJOINT Foot_L\n{\nOFFSET 0 -80 0\n"
            "CHANNELS 3 Zrotation Xrotation Yrotation\nEnd Site\n{\nOFFSET 0 0 10\n}\n}\n}\n"
            "JOINT UpLeg_R\n{\nOFFSET -10 -10 0\nCHANNELS 3 Zrotation Xrotation Yrotation\nJOINT Foot_R\n{\nOFFSET 0 -80 0\n"
            "CHANNELS 3 Zrotation Xrotation Yrotation\nEnd Site\n{\nOFFSET 0 0 10\n}\n}\n}\n"
            "JOINT Arm_L\n{\nOFFSET 20 40 0\nCHANNELS 3 Zrotation Xrotation Yrotation\nEnd Site\n{\nOFFSET 20 0 0\n}\n}\n"
            "JOINT Arm_R\n{\nOFFSET -20 40 0\nCHANNELS 3 Zrotation Xrotation Yrotation\nEnd Site\n{\nOFFSET -20 0 0\n}\n}\n}\n"
            "MOTION\nFrames: 40\nFrame Time: 0.05\n")  # fmt: skip
    rows = "\n".join(f"{i * 0.5} 90 0 0 0 0" + " 0 0 0" * 6 for i in range(40))
    for k in range(12):
        (folder / f"dataset-1_clip{k}.bvh").write_text(text + rows + "\n")  # the run's subset
    code, _, err = run(
        capsys,
        "train",
        "--resume",
        tiny_run,
        "--data",
        folder,
        "--out",
        tiny_run,
        "--cache",
        tmp_path / "c",
        "-q",
    )
    assert code == 2
    assert "trained on another skeleton" in err and len(err.strip().splitlines()) == 1


def test_plot_of_a_run(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "plot", tiny_run, "-o", tmp_path / "curves.png")
    assert code == 0 and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_kinematics_table(
    tiny_run: Path, bandai_root: Path, session_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "table.json"
    code, printed, _ = run(capsys, "evaluate", "kinematics", "-c", tiny_run, "--label", "tiny", "--data", bandai_root,
                           "-n", "3", "--seconds", "2", "--cache", session_cache, "-o", out)  # fmt: skip
    assert code == 0
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["real test", "real train", "tiny"]
    assert (
        rows[0]["bone_std_cm"] < 1e-4 and rows[2]["samples"] == 3
    )  # real bones are rigid (float32 features)
    assert "skating" in printed


def test_resume_takes_loop_settings_and_refuses_other_changes(
    tiny_run: Path, bandai_root: Path, session_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--set on --resume: a time limit or logging cadence is taken; a change to what is trained
    is one clear line and exit 2, never dropped silently; a value equal to the run's passes."""
    import json
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    common = ["train", "--resume", run_dir, "--out", run_dir, "--data", bandai_root, "--subset", "dataset-1",
              "--cache", session_cache, "-q"]  # fmt: skip
    code, _, err = run(capsys, *common, "--max-steps", "14", "--set", "train.lr=0.5")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--resume keeps the run's configuration: train.lr is 0.001 there, --set asks 0.5" in err
    code, _, err = run(capsys, *common, "--preset", "bandai-small")  # another preset: was silently ignored
    assert (
        code == 2 and "--preset bandai-small starts a new run" in err and len(err.strip().splitlines()) == 1
    )
    code, _, err = run(capsys, *common, "--max-steps", "14", "--set", "train.max_minutes=30",
                       "--set", "train.log_every=1", "--set", "train.lr=0.001")  # fmt: skip
    assert code == 0, err
    latest = run_dir / "checkpoints" / (run_dir / "latest").read_text().strip().split("/")[-1]
    config = json.loads((latest / "config.json").read_text())
    assert config["config"]["train"]["max_minutes"] == 30 and config["config"]["train"]["log_every"] == 1
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line]  # fmt: skip
    assert steps[-2:] == [13, 14]  # logged every step after the resume


def test_first_line_of_a_library_error() -> None:
    """One-line messages quote a library error's first line, and its type where it says nothing."""
    from mofusion.errors import first_line

    assert first_line(RuntimeError("size mismatch for conv.weight\n  copying a param ...")) == (
        "size mismatch for conv.weight"
    )
    assert first_line(RuntimeError("\n  leading blank line\nmore")) == "leading blank line"
    assert first_line(RuntimeError("")) == "RuntimeError"


def test_a_stopped_training_run_says_where_to_resume(
    bandai_root: Path, session_cache: Path, tmp_path: Path
) -> None:
    """SIGTERM (a preempted job; Ctrl-C is the same) to `mofusion train`: exit status 130, a
    checkpoint of the last step, and one line saying how to continue."""
    import signal
    import subprocess
    import sys

    from conftest import signal_when_ready

    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "mofusion.cli", "train", "--preset", "tiny", "--data", str(bandai_root),
               "--subset", "dataset-1", "--cache", str(session_cache), "--out", str(run_dir), "-q",
               "--max-steps", "100000", "--set", "train.checkpoint_every=100000", "--set", "train.log_every=5"]  # fmt: skip
    # the child inherits an ignored SIGTERM, so it starts from the default (no preexec_fn: threads)
    inherited = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGTERM, inherited)
    # once training has begun
    stderr = signal_when_ready(process, (run_dir / "metrics.jsonl").is_file, signal.SIGTERM)
    assert process.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    step = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert last == (
        f"mofusion: interrupted at step {step}: checkpoint {run_dir}/checkpoints/step-{step:08d} written; "
        f"continue with: mofusion train --out {run_dir} --resume {run_dir}"
    ), last
    assert (run_dir / "latest").read_text().strip().endswith(f"step-{step:08d}")
