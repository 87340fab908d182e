"""BVH reading and writing: hand-made files with known answers, real Bandai-Namco files, pybvh
agreement, and malformed inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mofusion.bvh import BvhData, read_bvh, write_bvh
from mofusion.errors import InputError
from mofusion.motion import Motion

TINY = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Chest
  {
    OFFSET 0 10 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    JOINT Arm
    {
      OFFSET 5 0 0
      CHANNELS 3 Zrotation Yrotation Xrotation
      End Site
      {
        OFFSET 0 0 3
      }
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.1
0 0 0 0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 0 0 0 0 90 0
"""


def write(tmp_path: Path, text: str, name: str = "clip.bvh") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_tiny_file_has_the_hand_computed_positions(tmp_path: Path) -> None:
    data = read_bvh(write(tmp_path, TINY))
    assert data.skeleton.names == ("Hips", "Chest", "Arm")
    assert data.rotation_order(1) == "XYZ" and data.rotation_order(2) == "ZYX"
    assert data.fps == pytest.approx(10.0)
    pos = data.positions()
    assert np.allclose(pos[0], [[0, 0, 0], [0, 10, 0], [5, 10, 0]])
    # frame 1: root at (1,2,3) turned 90 deg about Z: chest offset (0,10,0) -> (-10,0,0);
    # the arm joint sits at chest + Rz90 (5,0,0) = chest + (0,5,0)
    assert np.allclose(pos[1], [[1, 2, 3], [-9, 2, 3], [-9, 7, 3]], atol=1e-9)


def test_write_read_round_trip_of_the_tiny_file(tmp_path: Path) -> None:
    data = read_bvh(write(tmp_path, TINY))
    out = tmp_path / "again.bvh"
    write_bvh(out, data)
    again = read_bvh(out)
    assert again.channels == data.channels and again.skeleton == data.skeleton
    assert np.allclose(again.positions(), data.positions(), atol=1e-6)


def test_real_files_round_trip_to_1e4_cm(bandai_clips: list[Path], tmp_path: Path) -> None:
    picks = [
        p for p in bandai_clips if any(k in p.name for k in ("dash_normal", "walk_happy", "punch", "bow_old"))
    ]
    assert len(picks) >= 3
    for clip in picks:
        data = read_bvh(clip)
        out = tmp_path / clip.name
        write_bvh(out, data)
        again = read_bvh(out)
        assert again.channels == data.channels
        assert np.abs(again.positions() - data.positions()).max() < 1e-4, clip.name


def _standard_layout_text(data: BvhData) -> str:
    """The same motion with joint_Root dropped, Hips as a 6-channel root and 3 rotation channels
    elsewhere: the layout pybvh reads. Written here by hand, independently of write_bvh."""
    sk = data.skeleton
    values, slices = data.values, data.channel_slices()
    assert sk.names[0] == "joint_Root" and np.abs(values[:, slices[0]]).max() == 0
    children = {j: [k for k, p in enumerate(sk.parents) if p == j] for j in range(sk.num_joints)}
    sites = {s.parent: s for s in sk.end_sites}
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        block = values[0, slices[j]]
        lines.append(f"{pad}{'ROOT' if j == 1 else 'JOINT'} {sk.names[j]}")
        lines.append(pad + "{")
        offset = (0.0, 0.0, 0.0) if j == 1 else tuple(block[:3])
        lines.append(f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}")
        if j == 1:
            lines.append(f"{pad}  CHANNELS 6 {' '.join(data.channels[j])}")
        else:
            lines.append(f"{pad}  CHANNELS 3 {' '.join(data.channels[j][3:])}")
        for k in children[j]:
            emit(k, depth + 1)
        if j in sites:
            site = " ".join(map(str, sites[j].offset))
            lines.extend([f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET {site}", pad + "  }"])
        lines.append(pad + "}")

    emit(1, 0)
    lines += ["MOTION", f"Frames: {data.num_frames}", f"Frame Time: {data.frame_time}"]
    for row in values:
        cells = list(row[slices[1]]) + [v for j in range(2, sk.num_joints) for v in row[slices[j]][3:]]
        lines.append(" ".join(f"{v:.6f}" for v in cells))
    return "\n".join(lines) + "\n"


def test_fk_agrees_with_pybvh_on_real_files(bandai_clips: list[Path], tmp_path: Path) -> None:
    pybvh = pytest.importorskip("pybvh")
    picks = [
        p for p in bandai_clips if any(k in p.name for k in ("walk_happy", "kick", "bye_old", "run_tired"))
    ]
    assert len(picks) >= 3
    for clip in picks:
        data = read_bvh(clip)
        ours = data.positions()[:, 1:]  # without joint_Root, which stays at the origin
        converted = write(tmp_path, _standard_layout_text(data), clip.name)
        theirs = pybvh.read_bvh_file(converted, world_up="+y").joint_positions()
        assert theirs.shape == ours.shape
        assert np.abs(theirs - ours).max() < 1e-4, clip.name  # measured: 1.4e-6 cm


def test_exported_motion_is_read_by_pybvh(bandai_clips: list[Path], tmp_path: Path) -> None:
    pybvh = pytest.importorskip("pybvh")
    data = read_bvh(bandai_clips[0])
    motion = Motion.from_bvh(data, scale=0.01)
    out = tmp_path / "standard.bvh"
    write_bvh(out, motion.to_bvh(scale=100.0))
    theirs = pybvh.read_bvh_file(out, world_up="+y").joint_positions()
    assert np.abs(theirs - data.positions()[:, 1:]).max() < 1e-3


def test_joint_root_is_folded_into_hips(bandai_clips: list[Path]) -> None:
    moving_root = next(p for p in bandai_clips if "dash_normal" in p.name)  # joint_Root translates here
    data = read_bvh(moving_root)
    assert np.abs(data.values[:, 2]).max() > 100
    motion = Motion.from_bvh(data, scale=0.01)
    assert motion.skeleton.names[0] == "Hips"
    assert np.allclose(motion.positions(), data.positions()[:, 1:] * 0.01, atol=1e-9)


MALFORMED = {
    "empty": ("", "empty file"),
    "no hierarchy": ("ROOT Hips\n{\n", "expected 'HIERARCHY'"),
    "truncated hierarchy": (TINY.split("JOINT Arm")[0], "unexpected end of the hierarchy"),
    "no motion section": (TINY.split("MOTION")[0], "no MOTION section"),
    "channel count mismatch": (
        TINY.replace("CHANNELS 3 Xrotation Yrotation Zrotation", "CHANNELS 4 Xrotation Yrotation Zrotation"),
        "CHANNELS says 4",
    ),
    "unknown channel": (
        TINY.replace("CHANNELS 3 Xrotation Yrotation Zrotation", "CHANNELS 3 Xrotation Yrotation Wrotation"),
        "unknown channel",
    ),
    "two rotation channels": (
        TINY.replace("CHANNELS 3 Xrotation Yrotation Zrotation", "CHANNELS 2 Xrotation Yrotation"),
        "all three or none",
    ),
    "non-numeric offset": (TINY.replace("OFFSET 0 10 0", "OFFSET 0 ten 0"), "expected a number"),
    "non-numeric value": (TINY.replace("1 2 3 90", "1 2 x 90"), "non-numeric value"),
    "nan value": (TINY.replace("1 2 3 90", "1 2 nan 90"), "non-finite"),
    "short frame line": (
        TINY.replace("1 2 3 90 0 0 0 0 0 0 90 0", "1 2 3 90 0 0 0 0 0 0 90"),
        "expected 12 values",
    ),
    "truncated motion": (TINY.replace("Frames: 2", "Frames: 5"), "truncated"),
    "bad frame count": (TINY.replace("Frames: 2", "Frames: two"), "frame count"),
    "zero frame time": (TINY.replace("Frame Time: 0.1", "Frame Time: 0"), "frame time must be positive"),
    "duplicate joint": (TINY.replace("JOINT Arm", "JOINT Chest"), "duplicate joint"),
    "two roots": (TINY.replace("MOTION", "ROOT Other\n{\n}\nMOTION"), "several ROOT"),
    "missing brace": (TINY.replace("ROOT Hips\n{", "ROOT Hips\n"), "expected '{'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_one_clear_error(case: str, tmp_path: Path) -> None:
    text, message = MALFORMED[case]
    path = write(tmp_path, text, "bad.bvh")
    with pytest.raises(InputError) as info:
        read_bvh(path)
    rendered = str(info.value)
    assert rendered.startswith(str(path)), rendered
    assert message in rendered, rendered
    assert "\n" not in rendered
    if case not in ("empty", "no motion section"):
        assert ": line " in rendered, rendered


def test_binary_and_missing_files(tmp_path: Path) -> None:
    binary = tmp_path / "x.bvh"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(InputError, match="not a text file"):
        read_bvh(binary)
    with pytest.raises(InputError, match="no such file"):
        read_bvh(tmp_path / "missing.bvh")


def test_writer_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = read_bvh(write(tmp_path, TINY))
    target = tmp_path / "out.bvh"
    target.write_text("previous")

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np.char, "mod", broken)
    with pytest.raises(OSError):
        write_bvh(target, data)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_motion_written_in_its_source_layout(bandai_clips: list[Path]) -> None:
    data = read_bvh(next(p for p in bandai_clips if "dash_normal" in p.name))  # joint_Root moves here
    motion = Motion.from_bvh(data, scale=0.01)
    back = motion.to_bvh_like(data, scale=0.01)
    assert back.channels == data.channels and back.skeleton == data.skeleton
    assert np.abs(back.positions() - data.positions()).max() < 1e-9
    kept = motion.to_bvh_like(data, scale=0.01, keep=np.arange(5))
    assert np.array_equal(kept.values[:5], data.values[:5])
    angles = [c in ("Xrotation", "Yrotation", "Zrotation") for chans in data.channels for c in chans]
    steps = np.abs(np.diff(kept.values[4:, angles], axis=0))  # the source itself wraps inside frames 0-4
    assert steps.max() < 180  # no 360-degree jumps from the last kept frame on
