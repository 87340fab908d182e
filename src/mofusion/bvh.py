"""BVH reading and writing, for any channel layout.

The reader accepts 0, 3 or 6 channels on any joint, position and rotation channels in any order,
any Euler order, and ``End Site`` leaves. It keeps the file's channel layout, so
``write_bvh(read_bvh(f))`` writes the same motion back. Errors name the file and line.

Semantics of position channels: where a joint has ``X/Y/Zposition`` channels, their values are the
joint's translation from its parent for that frame, *replacing* the OFFSET (so a root OFFSET is
ignored when the root has position channels). This is how mocap exporters (and the Bandai-Namco
files, which carry six channels on every joint) use them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ._io import atomic_open
from .errors import InputError
from .skeleton import EndSite, Skeleton, forward_kinematics

POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")
ROTATION_CHANNELS = ("Xrotation", "Yrotation", "Zrotation")
_ALL_CHANNELS = {name.lower(): name for name in POSITION_CHANNELS + ROTATION_CHANNELS}


@dataclass(frozen=True, eq=False)
class BvhData:
    """The content of a BVH file.

    Args:
        skeleton: joints (in file order), their OFFSETs, and end sites.
        channels: the channel names of each joint, in file order.
        frame_time: seconds per frame.
        values: ``(F, total_channels)`` motion values as in the file (degrees, file units).
    """

    skeleton: Skeleton
    channels: tuple[tuple[str, ...], ...]
    frame_time: float
    values: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def channel_slices(self) -> list[slice]:
        out, start = [], 0
        for chans in self.channels:
            out.append(slice(start, start + len(chans)))
            start += len(chans)
        return out

    def rotation_order(self, joint: int) -> str | None:
        """Euler order of a joint's rotation channels, e.g. ``"ZXY"``; None without rotations."""
        order = "".join(c[0] for c in self.channels[joint] if c in ROTATION_CHANNELS)
        return order or None

    def local_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame local rotation matrices ``(F, J, 3, 3)`` and translations ``(F, J, 3)``."""
        num_joints = self.skeleton.num_joints
        rotations = np.broadcast_to(np.eye(3), (self.num_frames, num_joints, 3, 3)).copy()
        translations = np.broadcast_to(self.skeleton.offsets, (self.num_frames, num_joints, 3)).copy()
        for j, (chans, sl) in enumerate(zip(self.channels, self.channel_slices(), strict=True)):
            block = self.values[:, sl]
            rot_cols = [i for i, c in enumerate(chans) if c in ROTATION_CHANNELS]
            if rot_cols:
                order = "".join(chans[i][0] for i in rot_cols)
                rotations[:, j] = Rotation.from_euler(order, block[:, rot_cols], degrees=True).as_matrix()
            for i, c in enumerate(chans):
                if c in POSITION_CHANNELS:
                    translations[:, j, POSITION_CHANNELS.index(c)] = block[:, i]
        return rotations, translations

    def positions(self) -> np.ndarray:
        """World joint positions ``(F, J, 3)`` by forward kinematics (float64)."""
        rotations, translations = self.local_transforms()
        rot = torch.from_numpy(rotations)
        trans = torch.from_numpy(translations)
        pos, _ = forward_kinematics(self.skeleton.parents, rot, trans[:, 0], offsets=trans)
        return pos.numpy()


# -- reading ---------------------------------------------------------------------------------------


class _Tokens:
    """Header tokens with their line numbers; braces are split from neighbouring text."""

    def __init__(self, path: Path, lines: list[str]) -> None:
        self.path = path
        self.items: list[tuple[str, int]] = []
        self.pos = 0
        self.motion_line: int | None = None
        for number, line in enumerate(lines, start=1):
            stripped = line.strip()
            if stripped.upper() == "MOTION":
                self.motion_line = number
                break
            for token in stripped.replace("{", " { ").replace("}", " } ").split():
                self.items.append((token, number))

    def error(self, problem: str, line: int | None = None) -> InputError:
        if line is None:
            line = self.items[min(self.pos, len(self.items) - 1)][1] if self.items else None
        return InputError(self.path, problem, line)

    def peek(self) -> tuple[str, int] | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def next(self, what: str) -> tuple[str, int]:
        item = self.peek()
        if item is None:
            raise self.error(f"unexpected end of the hierarchy, expected {what}")
        self.pos += 1
        return item

    def expect(self, word: str) -> int:
        token, line = self.next(repr(word))
        if token.upper() != word.upper():
            raise InputError(self.path, f"expected {word!r}, got {token!r}", line)
        return line

    def number(self, what: str) -> float:
        token, line = self.next(what)
        try:
            value = float(token)
        except ValueError:
            raise InputError(self.path, f"expected a number for {what}, got {token!r}", line) from None
        if not math.isfinite(value):
            raise InputError(self.path, f"{what} is not finite: {token!r}", line)
        return value

    def rest_of_line(self, line: int) -> list[str]:
        words = []
        while (item := self.peek()) is not None and item[1] == line and item[0] not in "{}":
            words.append(item[0])
            self.pos += 1
        return words


def read_bvh(path: str | Path) -> BvhData:
    """Read a BVH file; raise :class:`InputError` naming the file and line on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a .bvh file") from None
    except UnicodeDecodeError:
        raise InputError(path, "not a text file (it is not valid UTF-8)") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})") from None
    lines = text.splitlines()
    tokens = _Tokens(path, lines)
    if not tokens.items:
        raise InputError(path, "empty file, expected 'HIERARCHY'", 1 if lines else None)
    tokens.expect("HIERARCHY")

    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    end_sites: list[EndSite] = []

    def parse_joint(parent: int, keyword_line: int) -> None:
        words = tokens.rest_of_line(keyword_line)
        if not words:
            raise InputError(path, "a joint needs a name", keyword_line)
        name = " ".join(words)
        if name in names:
            raise InputError(path, f"duplicate joint name {name!r}", keyword_line)
        index = len(names)
        names.append(name)
        parents.append(parent)
        tokens.expect("{")
        tokens.expect("OFFSET")
        offsets.append([tokens.number("OFFSET") for _ in range(3)])
        channel_line = tokens.expect("CHANNELS")
        channels.append(_parse_channels(tokens, channel_line))
        while True:
            token, line = tokens.next("'JOINT', 'End Site' or '}'")
            upper = token.upper()
            if upper == "}":
                return
            if upper == "JOINT":
                parse_joint(index, line)
            elif upper == "END":
                site_word, _ = tokens.next("'Site'")
                if site_word.upper() != "SITE":
                    raise InputError(path, f"expected 'End Site', got 'End {site_word}'", line)
                tokens.expect("{")
                tokens.expect("OFFSET")
                site = tuple(tokens.number("End Site OFFSET") for _ in range(3))
                tokens.expect("}")
                end_sites.append(EndSite(index, site))  # type: ignore[arg-type]
            else:
                raise InputError(path, f"expected 'JOINT', 'End Site' or '}}', got {token!r}", line)

    root_line = tokens.expect("ROOT")
    parse_joint(-1, root_line)
    if (extra := tokens.peek()) is not None:
        if extra[0].upper() == "ROOT":
            raise InputError(path, "several ROOT joints; only one skeleton per file is supported", extra[1])
        raise InputError(path, f"unexpected {extra[0]!r} after the hierarchy", extra[1])
    if tokens.motion_line is None:
        raise InputError(path, "no MOTION section (the file is truncated?)", len(lines))

    skeleton = Skeleton(tuple(names), tuple(parents), np.asarray(offsets), tuple(end_sites))
    num_channels = sum(len(c) for c in channels)
    frames, frame_time, values = _parse_motion(path, lines, tokens.motion_line, num_channels)
    return BvhData(skeleton, tuple(channels), frame_time, values)


def _parse_channels(tokens: _Tokens, line: int) -> tuple[str, ...]:
    path = tokens.path
    token, count_line = tokens.next("a channel count")
    try:
        count = int(token)
    except ValueError:
        raise InputError(
            path, f"expected a channel count after CHANNELS, got {token!r}", count_line
        ) from None
    names = tokens.rest_of_line(count_line)
    if len(names) != count:
        raise InputError(path, f"CHANNELS says {count} but lists {len(names)} channel names", count_line)
    result = []
    for name in names:
        canonical = _ALL_CHANNELS.get(name.lower())
        if canonical is None:
            raise InputError(path, f"unknown channel {name!r}", count_line)
        result.append(canonical)
    positions = [c for c in result if c in POSITION_CHANNELS]
    rotations = [c for c in result if c in ROTATION_CHANNELS]
    if len(set(result)) != len(result):
        raise InputError(path, "a channel is listed twice", count_line)
    if len(positions) not in (0, 3) or len(rotations) not in (0, 3):
        raise InputError(
            path,
            "each joint needs all three or none of the position and of the rotation channels",
            count_line,
        )
    return tuple(result)


def _parse_motion(
    path: Path, lines: list[str], motion_line: int, num_channels: int
) -> tuple[int, float, np.ndarray]:
    index = motion_line  # 0-based index of the line after MOTION

    def header(label: str) -> tuple[str, int]:
        nonlocal index
        while index < len(lines) and not lines[index].strip():
            index += 1
        if index >= len(lines):
            raise InputError(path, f"missing '{label}' line (the file is truncated?)", len(lines))
        line = lines[index].strip()
        index += 1
        if not line.lower().startswith(label.lower()):
            raise InputError(path, f"expected '{label}', got {line[:40]!r}", index)
        return line[len(label) :].strip(), index

    raw, line_no = header("Frames:")
    try:
        frames = int(raw)
    except ValueError:
        raise InputError(path, f"frame count is not an integer: {raw!r}", line_no) from None
    if frames < 1:
        raise InputError(path, f"the file declares {frames} frames; at least one is needed", line_no)
    raw, line_no = header("Frame Time:")
    try:
        frame_time = float(raw)
    except ValueError:
        raise InputError(path, f"frame time is not a number: {raw!r}", line_no) from None
    if not math.isfinite(frame_time) or frame_time <= 0:
        raise InputError(path, f"frame time must be positive, got {raw!r}", line_no)

    data_lines = lines[index:]
    while data_lines and not data_lines[-1].strip():
        data_lines.pop()
    first_data_line = index + 1
    text = " ".join(data_lines)
    try:
        flat = np.array(text.split(), dtype=np.float64)
    except ValueError:
        flat = None
    if flat is None or flat.size != frames * num_channels or len(data_lines) != frames:
        _locate_motion_error(path, data_lines, first_data_line, frames, num_channels)
    assert flat is not None
    if not np.isfinite(flat).all():
        bad = int(np.flatnonzero(~np.isfinite(flat))[0]) // max(num_channels, 1)
        raise InputError(path, "non-finite value (nan or inf) in the motion data", first_data_line + bad)
    return frames, frame_time, flat.reshape(frames, num_channels)


def _locate_motion_error(path: Path, data_lines: list[str], first: int, frames: int, width: int) -> None:
    """Find the first bad data line and raise an error that names it (slow path)."""
    for offset, line in enumerate(data_lines):
        number = first + offset
        words = line.split()
        if not words:
            raise InputError(path, "blank line inside the motion data", number)
        for word in words:
            try:
                float(word)
            except ValueError:
                raise InputError(
                    path, f"non-numeric value {word[:20]!r} in the motion data", number
                ) from None
        if len(words) != width:
            raise InputError(path, f"expected {width} values per frame, found {len(words)}", number)
        if offset >= frames:
            raise InputError(path, f"more frame lines than the {frames} declared", number)
    raise InputError(
        path,
        f"truncated: {frames} frames declared but {len(data_lines)} found",
        first + max(len(data_lines) - 1, 0),
    )


# -- writing ---------------------------------------------------------------------------------------


def write_bvh(path: str | Path, data: BvhData, digits: int = 10) -> None:
    """Write ``data`` as a BVH file, atomically (a reader never sees a partial file).

    Numbers are printed with ``digits`` significant digits, enough to give back every value read
    from a file (mocap exporters print six to eight), so unchanged frames keep their exact values.
    """
    skeleton = data.skeleton
    fmt = f"%.{digits}g"

    def number(v: float) -> str:
        text = fmt % v
        return "0" if float(text) == 0 else text

    children: dict[int, list[int]] = {j: [] for j in range(skeleton.num_joints)}
    for j, p in enumerate(skeleton.parents):
        if p >= 0:
            children[p].append(j)
    sites: dict[int, list[EndSite]] = {}
    for site in skeleton.end_sites:
        sites.setdefault(site.parent, []).append(site)

    out: list[str] = ["HIERARCHY"]

    def emit(joint: int, depth: int) -> None:
        pad = "\t" * depth
        keyword = "ROOT" if joint == 0 else "JOINT"
        out.append(f"{pad}{keyword} {skeleton.names[joint]}")
        out.append(f"{pad}{{")
        out.append(f"{pad}\tOFFSET {' '.join(number(v) for v in skeleton.offsets[joint])}")
        chans = data.channels[joint]
        out.append(f"{pad}\tCHANNELS {len(chans)}{''.join(' ' + c for c in chans)}")
        for child in children[joint]:
            emit(child, depth + 1)
        for site in sites.get(joint, []):
            out.append(f"{pad}\tEnd Site")
            out.append(f"{pad}\t{{")
            out.append(f"{pad}\t\tOFFSET {' '.join(number(v) for v in site.offset)}")
            out.append(f"{pad}\t}}")
        out.append(f"{pad}}}")

    emit(0, 0)
    out.append("MOTION")
    out.append(f"Frames: {data.num_frames}")
    out.append(f"Frame Time: {data.frame_time:.8f}")
    with atomic_open(path, "w") as handle:
        handle.write("\n".join(out) + "\n")
        rows = np.char.mod(fmt, np.asarray(data.values, dtype=np.float64))
        handle.write("\n".join(" ".join(row) for row in rows) + "\n")


def euler_from_matrices(rotations: np.ndarray, order: str) -> np.ndarray:
    """Euler angles in degrees ``(..., 3)`` for an order such as ``"ZXY"``, unwrapped over axis 0.

    Each angle is made continuous across frames by adding multiples of 360 degrees, which leaves
    the rotation unchanged and keeps animation curves free of jumps.
    """
    shape = rotations.shape[:-2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gimbal-lock notices: the angles are still a valid solution
        angles = Rotation.from_matrix(rotations.reshape(-1, 3, 3)).as_euler(order, degrees=True)
    angles = angles.reshape(shape + (3,))
    if angles.shape[0] > 1:
        angles = np.unwrap(angles, period=360.0, axis=0)
    return angles
