"""Stick-figure videos of joint positions (matplotlib for drawing, ffmpeg from imageio-ffmpeg).

Each motion gets a panel seen from a fixed oblique camera (orthographic), following the root over a
ground grid, so walking stays in view and the grid shows the travel. Several motions are tiled in a
grid in one video. The output format follows the suffix: ``.mp4`` (H.264) or ``.gif``.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import imageio_ffmpeg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from ._io import atomic_path  # noqa: E402
from .errors import InputError, MofusionError  # noqa: E402
from .skeleton import joint_side  # noqa: E402

VIDEO_SUFFIXES = (".mp4", ".gif")
_COLORS = {"left": "#d62728", "right": "#1f77b4", None: "#333333"}


def _camera(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Rows: the screen's right and up axes, in world coordinates (Y up)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    view = np.array(
        [math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)]
    )  # towards camera
    right = np.cross([0.0, 1.0, 0.0], view)
    right /= np.linalg.norm(right)
    up = np.cross(view, right)
    return np.stack([right, up])


def render_video(
    path: str | Path,
    motions: Sequence[np.ndarray],
    parents: Sequence[int],
    fps: float,
    names: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    panel_size: int = 320,
    azimuth: float = 35.0,
    elevation: float = 20.0,
    max_columns: int = 5,
    audio: str | Path | None = None,
    audio_start: float = 0.0,
) -> Path:
    """Render joint positions ``(T, J, 3)`` (metres, Y up) of one or more motions into a video.

    Args:
        path: ``.mp4`` or ``.gif``.
        motions: one array per panel; shorter ones hold their last frame.
        parents: the skeleton's parent indices (bones are drawn from joint to parent).
        fps: frames per second of the motions and of the video.
        names: joint names, used to colour left (red) and right (blue) limbs.
        titles: a caption per panel.
        audio: a sound file whose stretch from ``audio_start`` seconds becomes the video's sound
            track, in step with frame 0 (mp4 only).
    """
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise MofusionError(f"{path}: the video format must be .mp4 or .gif")
    if not motions:
        raise MofusionError("nothing to render")
    if audio is not None and path.suffix.lower() != ".mp4":
        raise MofusionError(f"{path}: only an .mp4 can carry music")
    if audio is not None and not Path(audio).is_file():
        raise InputError(audio, "no such file")
    if not math.isfinite(audio_start) or audio_start < 0:
        raise MofusionError(f"the music start must be a time >= 0 s, got {audio_start}")
    motions = [np.asarray(m, dtype=np.float64) for m in motions]
    for m in motions:
        if m.ndim != 3 or m.shape[-1] != 3 or m.shape[1] != len(parents):
            raise MofusionError(f"positions must be (T, {len(parents)}, 3), got {m.shape}")
        if not np.isfinite(m).all():
            raise MofusionError("positions contain non-finite values; nothing rendered")
    num_frames = max(len(m) for m in motions)
    columns = min(max_columns, len(motions))
    rows = math.ceil(len(motions) / columns)
    projection = _camera(azimuth, elevation)
    bones = [(j, p) for j, p in enumerate(parents) if p >= 0]
    colors = [_COLORS[joint_side(names[j]) if names else None] for j, _ in bones]
    height = max(float(np.ptp(m[..., 1])) for m in motions)
    half = max(1.1, 0.65 * height + 0.3)

    dpi = 100
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * panel_size / dpi, rows * panel_size / dpi), dpi=dpi
    )
    axes = np.atleast_1d(axes).ravel()
    panels = []
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k >= len(motions):
            continue
        ax.set_xlim(-half, half)
        ax.set_ylim(-0.45 * half, 1.55 * half)
        ax.set_aspect("equal")
        grid = LineCollection([], colors="#bbbbbb", linewidths=0.6)
        body = LineCollection([], colors=colors, linewidths=2.2, capstyle="round")
        ax.add_collection(grid)
        ax.add_collection(body)
        if titles is not None and k < len(titles):
            ax.set_title(titles[k], fontsize=8)
        panels.append((grid, body))
    top = 1.0 - (24.0 / (rows * panel_size) if titles else 0.01)
    fig.subplots_adjust(0.01, 0.01, 0.99, top, 0.02, 0.1)
    fig.canvas.draw()
    width_px, height_px = fig.canvas.get_width_height()

    def grid_segments(center: np.ndarray) -> np.ndarray:
        step = 0.5
        lo = np.floor((center[[0, 2]] - 3.0) / step) * step
        ticks_x = lo[0] + step * np.arange(13)
        ticks_z = lo[1] + step * np.arange(13)
        lines = [[(x, 0, ticks_z[0]), (x, 0, ticks_z[-1])] for x in ticks_x]
        lines += [[(ticks_x[0], 0, z), (ticks_x[-1], 0, z)] for z in ticks_z]
        world = np.asarray(lines) - np.array([center[0], 0.0, center[2]])
        return world @ projection.T

    with atomic_path(path) as tmp:
        video = tmp if audio is None else tmp.with_name(f"{tmp.stem}.video.mp4")
        options = (
            {"codec": "gif", "pix_fmt_out": "rgb8"}
            if path.suffix.lower() == ".gif"
            else {
                "codec": "libx264",
                "pix_fmt_out": "yuv420p",
                "quality": 7,
            }
        )
        writer = imageio_ffmpeg.write_frames(
            str(video),
            (width_px, height_px),
            fps=fps,
            macro_block_size=2,
            ffmpeg_log_level="error",
            **options,
        )
        writer.send(None)
        try:
            for frame in range(num_frames):
                for (grid, body), motion in zip(panels, motions, strict=False):
                    pose = motion[min(frame, len(motion) - 1)]
                    center = pose[0]
                    grid.set_segments(grid_segments(center))
                    local = (pose - np.array([center[0], 0.0, center[2]])) @ projection.T
                    body.set_segments([[local[j], local[p]] for j, p in bones])
                fig.canvas.draw()
                image = np.asarray(fig.canvas.buffer_rgba())[..., :3]
                writer.send(np.ascontiguousarray(image).tobytes())
        finally:
            writer.close()
            plt.close(fig)
        if audio is not None:
            try:
                _add_sound(video, Path(audio), audio_start, tmp)
            finally:
                video.unlink(missing_ok=True)
    return path


def _add_sound(video: Path, audio: Path, start: float, out: Path) -> None:
    """``video`` with ``audio`` from ``start`` seconds as its sound track (AAC), as long as the video."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video),
               "-ss", f"{start:.3f}", "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
               "-c:a", "aac", "-b:a", "128k", "-shortest", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
        raise InputError(audio, f"cannot add it as the video's sound ({first})")
