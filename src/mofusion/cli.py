"""The ``mofusion`` command line: train, generate, render, data, evaluate.

Every user error ends as one line ``mofusion: error: ...`` and exit status 2; nothing half-written is
left behind (all writers are atomic).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .errors import MofusionError

if TYPE_CHECKING:
    from .conditioning import PromptAnchors
    from .config import MofusionConfig
    from .pipeline import MotionPipeline
    from .tasks import Clip

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="mofusion: synthesise and edit 3D human motion with denoising diffusion (MoFusion).",
)
data_app = typer.Typer(no_args_is_help=True, help="Prepare and inspect motion data sets.")
evaluate_app = typer.Typer(no_args_is_help=True, help="Measure generated motions against real data.")
app.add_typer(data_app, name="data")
app.add_typer(evaluate_app, name="evaluate")


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _write_json(out: Path | None, table: object) -> None:
    """Write a result table as JSON (atomically) when ``--out`` was given, and say where."""
    if out is not None:
        from ._io import atomic_write_json

        atomic_write_json(out, table)
        typer.echo(str(out))


# Options several commands share, each with one wording of its help.
_Seed = Annotated[int, typer.Option(help="Random seed (same seed, same motions).")]
_Sampler = Annotated[str | None, typer.Option(help="ddpm, ddim, dpm or dpm-sde (default: the checkpoint's).")]
_Steps = Annotated[int | None, typer.Option(help="Denoising steps (default: the checkpoint's).")]
_Device = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
_Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
_Cache = Annotated[
    Path | None, typer.Option(help="Cache folder (default $MOFUSION_CACHE or ~/.cache/mofusion).")
]
_TableOut = Annotated[Path | None, typer.Option("--out", "-o", help="Write the table as JSON.")]
_Labels = Annotated[list[str] | None, typer.Option("--label", help="A row name per checkpoint.")]
_MotionOut = Annotated[Path, typer.Option("--out", "-o", help="Output .bvh, .npy or .npz.")]
_Subsets = Annotated[
    list[str] | None, typer.Option("--subset", help="Bandai-Namco archive(s) to use, e.g. dataset-2.")
]


# -- train -----------------------------------------------------------------------------------------


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (logs, checkpoints).")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Data folder (Bandai-Namco, dance-with-melody or any BVH folder) or a .npz pack.",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Starting configuration: bandai, bandai-small, bandai-text, bandai-text-small, "
            "dance, dance-small (music to dance on dance-with-melody), tiny."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML or JSON config file.")] = None,
    subset: _Subsets = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after this many optimiser steps.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue a run (its directory or a checkpoint).")
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option("--init-from", help="Start from a checkpoint's weights (fine-tuning).")
    ] = None,
    no_kinematic: Annotated[
        bool, typer.Option("--no-kinematic", help="Train without the kinematic losses.")
    ] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field: section.field=value.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    cache: _Cache = None,
    quiet: _Quiet = False,
) -> None:
    """Train a motion diffusion model."""
    from .checkpoint import load_checkpoint
    from .config import MofusionConfig, assigned_fields, load_config_file, preset_config, resume_changes
    from .training import Trainer, TrainingInterrupted

    resumed = load_checkpoint(resume).config if resume is not None else None
    if resumed is not None and preset is not None and preset != resumed.preset:
        raise MofusionError(
            f"--preset {preset} starts a new run; --resume continues a run with its own configuration "
            f"(preset {resumed.preset or 'none'}; change what may change with --set, e.g. "
            "--set train.max_minutes=30)"
        )
    # a resumed run starts from its own configuration (a preset's frame rate or window would not fit it)
    cfg = resumed if resumed is not None else preset_config(preset) if preset else MofusionConfig()
    if config is not None:
        cfg = cfg.updated(load_config_file(config), source=str(config))
    overrides: dict = {"data": {}, "train": {}, "loss": {}}
    if resumed is not None and data is None:
        data = resumed.data.path
    if data is not None:
        overrides["data"]["path"] = str(data)
    if subset:
        overrides["data"]["subsets"] = list(subset)
    if max_steps is not None:
        overrides["train"]["max_steps"] = max_steps
    if device is not None:
        overrides["train"]["device"] = device
    if no_kinematic:
        overrides["loss"]["kinematic"] = False
    cfg = cfg.updated(overrides, set_ or [], source="the command line")
    if not cfg.data.path:
        raise MofusionError("no data: pass --data PATH")
    started = time.perf_counter()
    if init_from is not None and resume is not None:
        raise MofusionError("--init-from starts a new run; it cannot be combined with --resume")
    changes = resume_changes(resumed, cfg, assigned_fields(set_)) if resumed is not None else None
    trainer = Trainer(
        cfg, out, resume=resume, progress=not quiet, cache=cache, init_from=init_from, resume_changes=changes
    )
    main = trainer.dist.is_main  # under accelerate launch / torchrun, rank 0 speaks for the job
    processes = f" x {trainer.dist.world_size} processes" if trainer.dist.enabled else ""
    if main:
        _echo(
            f"model: {trainer.model.num_parameters() / 1e6:.2f} M parameters; data: "
            f"{trainer.dataset.collection.num_clips} clips, {len(trainer.dataset.split['train'])} for "
            f"training; features: {trainer.dataset.spec.dim}; device: {trainer.device}{processes}"
        )
    stopped = None
    try:
        result = trainer.fit()
    except TrainingInterrupted as exc:  # Ctrl-C or SIGTERM: every rank stopped at the same step
        stopped = str(exc)
    dist = trainer.dist
    del trainer  # its DDP wrapper holds the process group, which close() then destroys
    dist.close()
    if stopped is not None:
        if main:  # rank 0 says where to resume (typer turns a KeyboardInterrupt into a silent 130)
            _echo(f"mofusion: interrupted {stopped}")
        raise typer.Exit(130)
    minutes = (time.perf_counter() - started) / 60
    val = f", val loss {result.last_val['val_loss']:.4f}" if result.last_val else ""
    if main:
        _echo(f"trained to step {result.step} in {minutes:.1f} min{val}; checkpoint: {result.checkpoint}")


# -- generate --------------------------------------------------------------------------------------


@app.command()
def generate(
    out: _MotionOut,
    text: Annotated[
        str | None,
        typer.Option("--text", "-t", help="What the motion shows (text models), e.g. 'a person waves'."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", "-c", help="Checkpoint or run directory (default: the packaged text model)."
        ),
    ] = None,
    music: Annotated[
        Path | None,
        typer.Option("--music", "-m", help="A song (wav, flac, ogg, mp3) to dance to (music models)."),
    ] = None,
    music_start: Annotated[
        float, typer.Option("--music-start", help="Where in the song the dance starts (seconds).")
    ] = 0.0,
    seconds: Annotated[
        float | None,
        typer.Option(help="Duration of each motion (default 6 s; with --music, the song to its end)."),
    ] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="How many motions.")] = 1,
    seed: _Seed = 0,
    sampler: _Sampler = None,
    steps: _Steps = None,
    eta: Annotated[float | None, typer.Option(help="DDIM eta (0: deterministic).")] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="Classifier-free guidance scale (default: the checkpoint's)."),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            help="Noise each denoising step adds, 0-2 (default: the checkpoint's; 1 is the trained "
            "process, lower is calmer, higher livelier)."
        ),
    ] = None,
    anchor: Annotated[
        bool | None,
        typer.Option(
            "--anchor/--no-anchor",
            help="Read --text together with the trained caption of its nearest training class "
            "(default: the checkpoint's; on for the packaged model).",
        ),
    ] = None,
    render: Annotated[
        Path | None, typer.Option("--render", help="Also write a stick-figure .mp4 or .gif.")
    ] = None,
    bvh_fps: Annotated[
        float | None, typer.Option("--bvh-fps", help="Resample BVH output to this frame rate.")
    ] = None,
    no_ik: Annotated[
        bool,
        typer.Option("--no-ik", help="Write the predicted rotations as they are (no fit to the positions)."),
    ] = False,
    device: _Device = "auto",
    acceleration: Annotated[
        str,
        typer.Option(
            help="Sampling speed-ups: auto (on a GPU a CUDA graph of the step all in bf16 with fused group "
            "norms, float32 for edits; on a CPU the step runner with channels-last convolutions), none "
            "(the plain loop), or runner/bf16/bf16-all/fused/channels-last/compile/graph joined by '+' "
            "(compile pays in long runs only; bf16: autocast; bf16-all: the step all in bf16; fused: "
            "each group norm and its SiLU as one Triton kernel on a GPU; channels-last: convolutions "
            "that read and write (batch, frames, channels) in memory)."
        ),
    ] = "auto",
    quiet: _Quiet = False,
) -> None:
    """Generate motions with a trained model and write them as BVH or joint positions.

    Without --checkpoint the packaged text-to-motion model is used (trained on Bandai-Namco, CC BY-NC 4.0).
    With --music and a music model (mofusion train --preset dance), a dance to the song, as long as
    the song (window after window); --render then writes the song under the video.
    """
    from .export import MOTION_SUFFIXES, check_output, save_bvh, save_positions
    from .render import VIDEO_SUFFIXES

    out = check_output(out, MOTION_SUFFIXES)
    if render is not None:
        render = check_output(render, VIDEO_SUFFIXES)
    if bvh_fps is not None and not 1 <= bvh_fps <= 240:
        raise MofusionError(f"--bvh-fps must be between 1 and 240, got {bvh_fps}")
    if guidance is not None and not 0 <= guidance <= 20:
        raise MofusionError(f"--guidance must be between 0 and 20, got {guidance}")
    _check_temperature(temperature)
    if music is not None:
        pipe, features, positions, meta = _dance_to(
            music, checkpoint, music_start, seconds, num_samples, seed, sampler, steps, guidance,
            device, acceleration, quiet, text, temperature,
        )  # fmt: skip
        titles: list[str] | None = [f"{music.name} seed {seed} #{i}" for i in range(num_samples)]
    else:
        pipe, features, positions, meta = _text_to_motion(
            text, checkpoint, seconds, num_samples, seed, sampler, steps, eta, guidance, device,
            acceleration, quiet, anchor, temperature,
        )  # fmt: skip
        label = f'"{text[:40]}" ' if text else ""
        titles = [f"{label}seed {seed} #{i}" for i in range(num_samples)] if num_samples > 1 or text else None
    if out.suffix.lower() == ".bvh":
        written = save_bvh(out, pipe.to_motions(features, ik=not no_ik), pipe.file_scale, bvh_fps)
    else:
        written = save_positions(out, positions, pipe.spec.skeleton, pipe.fps, meta)
    if render is not None:
        from .render import render_video

        skeleton = pipe.spec.skeleton
        written.append(
            render_video(
                render,
                list(positions),
                skeleton.parents,
                pipe.fps,
                skeleton.names,
                titles,
                audio=music,
                audio_start=music_start,
            )  # fmt: skip
        )
    for path in written:
        typer.echo(str(path))


def _text_to_motion(
    text: str | None,
    checkpoint: Path | None,
    seconds: float | None,
    num_samples: int,
    seed: int,
    sampler: str | None,
    steps: int | None,
    eta: float | None,
    guidance: float | None,
    device: str,
    acceleration: str,
    quiet: bool,
    anchor: bool | None = None,
    temperature: float | None = None,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """``generate`` without --music: motions (for a prompt with a text model), as features, joint
    positions and the sidecar's metadata."""
    from .checkpoint import default_checkpoint
    from .encoders import check_text
    from .pipeline import MotionPipeline, check_seconds

    seconds = 6.0 if seconds is None else seconds
    if not 1 <= num_samples <= 1000:
        raise MofusionError(f"--num-samples must be between 1 and 1000, got {num_samples}")
    check_seconds(seconds)
    if text is not None:
        text = check_text(text)
    pipe = MotionPipeline.from_checkpoint(checkpoint or default_checkpoint(), device, acceleration)
    _set_temperature(pipe, temperature)
    cond = cond_mask = None
    meta: dict[str, Any] = {
        "checkpoint": str(checkpoint or "packaged"),
        "seed": seed,
        "seconds": seconds,
        "text": text,
        "temperature": pipe.config.sample.temperature,
    }
    if text is not None:
        if anchor is not None:
            pipe.use_anchors(anchor)
        cond, cond_mask, read_with = pipe.read_prompts([text], repeat=num_samples)
        if read_with is not None:
            meta["read_with"] = read_with[0]
            if not quiet:
                typer.echo(
                    f'read with "{read_with[0]}", the nearest trained class (--no-anchor: the text alone)',
                    err=True,
                )
    result = pipe.generate(
        num_samples, pipe.frames_for(seconds), seed=seed, sampler=sampler, steps=steps, eta=eta,
        guidance_scale=guidance, cond=cond, cond_mask=cond_mask, progress=not quiet,
    )  # fmt: skip
    return pipe, result.features, result.positions.numpy(), meta


def _dance_to(
    music: Path,
    checkpoint: Path | None,
    music_start: float,
    seconds: float | None,
    num_samples: int,
    seed: int,
    sampler: str | None,
    steps: int | None,
    guidance: float | None,
    device: str,
    acceleration: str,
    quiet: bool,
    text: str | None,
    temperature: float | None = None,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """``generate --music``: dances to the song (every check before the model runs), as features,
    joint positions and the sidecar's metadata."""
    import math

    import numpy as np
    import torch

    from .dance import generate_dance, song_frames
    from .pipeline import MotionPipeline

    if text is not None:
        raise MofusionError("--text and --music do not go together: a music model dances to the song")
    if checkpoint is None:
        raise MofusionError(
            "--music needs --checkpoint of a music model (none is packaged: train one with "
            "'mofusion train --preset dance --data PATH')"
        )
    if not 1 <= num_samples <= 16:
        raise MofusionError(f"--num-samples must be between 1 and 16 for dances, got {num_samples}")
    if not math.isfinite(music_start) or music_start < 0:
        raise MofusionError(f"--music-start must be >= 0 seconds, got {music_start}")
    if seconds is not None and (not math.isfinite(seconds) or not 1 <= seconds <= 600):
        raise MofusionError(f"--seconds must be between 1 and 600 for a dance, got {seconds}")
    pipe = MotionPipeline.from_checkpoint(checkpoint, device, acceleration)
    _set_temperature(pipe, temperature)
    frames = song_frames(pipe, music, music_start, seconds)
    results = generate_dance(
        pipe, [frames] * num_samples, seed=seed, steps=steps, sampler=sampler, guidance_scale=guidance,
        progress=not quiet,
    )  # fmt: skip
    meta = {"checkpoint": str(checkpoint), "seed": seed, "music": str(music), "music_start": music_start,
            "temperature": pipe.config.sample.temperature}  # fmt: skip
    features = torch.stack([r.features for r in results])
    return pipe, features, np.stack([r.positions.numpy() for r in results]), meta


# -- editing ---------------------------------------------------------------------------------------


def _check_temperature(temperature: float | None) -> None:
    if temperature is not None and not 0 <= temperature <= 2:
        raise MofusionError(f"--temperature must be between 0 and 2, got {temperature}")


def _set_temperature(pipe: Any, temperature: float | None) -> None:
    _check_temperature(temperature)
    if temperature is not None:
        pipe.config.sample.temperature = temperature


_METHOD_HELP = (
    "replace, condition or both (default: both for models trained with masks, else replace; "
    "interpolation-residual models, like the packaged editing model, take condition or both)."
)


def _check_method(method: str | None) -> None:
    if method is not None and method not in ("replace", "condition", "both"):
        raise MofusionError(f"--method must be replace, condition or both, got {method!r}")


def _task_outputs(out: Path, render: Path | None, method: str | None) -> tuple[Path, Path | None]:
    """Check a continue/edit call's output paths and method before anything is loaded."""
    from .export import MOTION_SUFFIXES, check_output
    from .render import VIDEO_SUFFIXES

    out = check_output(out, MOTION_SUFFIXES)
    render = check_output(render, VIDEO_SUFFIXES) if render is not None else None
    _check_method(method)
    return out, render


def _write_task_result(result, clip, pipe, out: Path, render: Path | None, meta: dict) -> None:  # type: ignore[no-untyped-def]
    """Write a continue/edit result as BVH (in the input's own layout when it was a BVH) or joint
    positions with ``meta``, optionally a video, and print the paths."""
    import numpy as np

    from .bvh import write_bvh
    from .export import save_positions

    if out.suffix.lower() == ".bvh":
        if clip.bvh is not None:
            data = result.motion.to_bvh_like(
                clip.bvh, scale=pipe.file_scale, keep=np.flatnonzero(result.kept)
            )
        else:
            data = result.motion.to_bvh(scale=1.0 / pipe.file_scale)
        write_bvh(out, data)
        written = [out]
    else:
        written = save_positions(out, result.positions[None], pipe.spec.skeleton, result.fps, meta)
    if render is not None:
        from .render import render_video

        skeleton = pipe.spec.skeleton
        written.append(render_video(render, [result.positions], skeleton.parents, result.fps, skeleton.names))
    for path in written:
        typer.echo(str(path))


_EditCheckpoint = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="Checkpoint (default: the packaged editing model; with --text, the packaged text model).",
    ),
]
_EditText = Annotated[
    str | None, typer.Option("--text", "-t", help="What the new motion shows (text models).")
]
_Temperature = Annotated[
    float | None,
    typer.Option(
        help="Noise each denoising step adds, 0-2 (default: the checkpoint's; 0.15 for the packaged "
        "editing model, chosen on validation in-betweens: 1 gives livelier, less likely motion)."
    ),
]
_ClipInput = Annotated[
    Path, typer.Option("--input", "-i", help="A .bvh of the model's skeleton, or a .npy from generate.")
]
_Method = Annotated[str | None, typer.Option(help=_METHOD_HELP)]
_TaskRender = Annotated[Path | None, typer.Option("--render", help="Also write an .mp4 or .gif.")]


def _load_task(
    input_path: Path, checkpoint: Path | None, text: str | None, temperature: float | None, device: str
) -> tuple[MotionPipeline, Clip, str | None, str]:
    """Load a continue/edit call's model and input clip: without a checkpoint, the packaged editing
    model, or the packaged text model when ``text`` is given. Returns the model, the clip, the checked
    text and the model's name for the output's metadata."""
    from .checkpoint import default_checkpoint, packaged_name
    from .encoders import check_text
    from .pipeline import MotionPipeline
    from .tasks import load_clip

    text = check_text(text) if text is not None else None
    pipe = MotionPipeline.from_checkpoint(checkpoint or default_checkpoint(edit=text is None), device)
    _set_temperature(pipe, temperature)
    clip = load_clip(input_path, pipe)
    return pipe, clip, text, str(checkpoint or packaged_name(edit=text is None))


@app.command("continue")
def continue_command(
    input_path: _ClipInput,
    out: _MotionOut,
    checkpoint: _EditCheckpoint = None,
    text: _EditText = None,
    seconds: Annotated[float, typer.Option(help="How much new motion to add.")] = 5.0,
    context: Annotated[float, typer.Option(help="Seconds at the end of the input the model sees.")] = 4.0,
    seed: _Seed = 0,
    method: _Method = None,
    sampler: _Sampler = None,
    steps: _Steps = None,
    temperature: _Temperature = None,
    render: _TaskRender = None,
    device: _Device = "auto",
    quiet: _Quiet = False,
) -> None:
    """Continue a motion: the input is kept as it is and new motion follows it."""
    import numpy as np

    from .pipeline import MAX_SECONDS
    from .tasks import run_edit

    out, render = _task_outputs(out, render, method)
    if not 0 < seconds <= MAX_SECONDS:
        raise MofusionError(f"--seconds must be between 0 and {MAX_SECONDS:.0f}, got {seconds}")
    if context <= 0:
        raise MofusionError(f"--context must be positive, got {context}")
    pipe, clip, text, used = _load_task(input_path, checkpoint, text, temperature, device)
    keep = np.ones(clip.num_frames, dtype=bool)
    result = run_edit(pipe, clip, keep, extra_seconds=seconds, context_seconds=context, seed=seed,
                      method=method, sampler=sampler, steps=steps, progress=not quiet, text=text)  # type: ignore[arg-type]  # fmt: skip
    meta = {"input": str(input_path), "checkpoint": used, "seed": seed, "kept_frames": clip.num_frames,
            "text": text, "temperature": pipe.config.sample.temperature}  # fmt: skip
    _write_task_result(result, clip, pipe, out, render, meta)


@app.command("edit")
def edit_command(
    input_path: _ClipInput,
    out: _MotionOut,
    checkpoint: _EditCheckpoint = None,
    text: _EditText = None,
    keep: Annotated[
        str | None, typer.Option(help="Input frames to keep, e.g. 0-30,120-150 (inclusive).")
    ] = None,
    regenerate: Annotated[
        str | None,
        typer.Option(
            help="Body parts or joints to make anew on every frame, comma-separated: upper-body, "
            "lower-body, arms, legs, left-arm, right-arm, left-leg, right-leg, head, or joint names."
        ),
    ] = None,
    keep_trajectory: Annotated[
        bool, typer.Option("--keep-trajectory", help="Keep the root path on every frame.")
    ] = False,
    seed: _Seed = 0,
    method: _Method = None,
    sampler: _Sampler = None,
    steps: _Steps = None,
    temperature: _Temperature = None,
    render: _TaskRender = None,
    device: _Device = "auto",
    quiet: _Quiet = False,
) -> None:
    """Regenerate parts of a motion: in-between kept frames (--keep) and/or a body part (--regenerate)."""
    import numpy as np

    from .editing import parse_ranges
    from .tasks import run_edit

    out, render = _task_outputs(out, render, method)
    if keep is None and regenerate is None and not keep_trajectory:
        raise MofusionError("say what to keep: --keep FRAMES, --regenerate PART and/or --keep-trajectory")
    pipe, clip, text, used = _load_task(input_path, checkpoint, text, temperature, device)
    frames = (
        parse_ranges(keep, clip.num_frames) if keep is not None else np.zeros(clip.num_frames, dtype=bool)
    )
    if keep is not None and regenerate is None and frames.all():
        raise MofusionError("--keep covers every frame: nothing is left to regenerate")
    result = run_edit(pipe, clip, frames, regenerate=regenerate, keep_trajectory=keep_trajectory, seed=seed,
                      method=method, sampler=sampler, steps=steps, progress=not quiet, text=text)  # type: ignore[arg-type]  # fmt: skip
    meta = {"input": str(input_path), "checkpoint": used, "seed": seed, "keep": keep,
            "regenerate": regenerate, "text": text,
            "temperature": pipe.config.sample.temperature}  # fmt: skip
    _write_task_result(result, clip, pipe, out, render, meta)


# -- serve -----------------------------------------------------------------------------------------


@app.command("serve")
def serve_command(
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="Model(s) to serve (default: the packaged text and editing models; 'packaged' and "
            "'packaged-edit' name them beside others).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 7860,
    device: _Device = "auto",
    max_pending: Annotated[int, typer.Option(help="Jobs that may wait; more are refused (429).")] = 8,
    acceleration: Annotated[
        str, typer.Option(help="Sampling speed-ups, as for generate (compile+graph pays in a server).")
    ] = "auto",
) -> None:
    """Start the browser app: open http://127.0.0.1:7860 (API documentation at /docs)."""
    if not 1 <= port <= 65535:
        raise MofusionError(f"--port must be between 1 and 65535, got {port}")
    if not 1 <= max_pending <= 1000:
        raise MofusionError(f"--max-pending must be between 1 and 1000, got {max_pending}")
    import uvicorn

    from .app.server import create_app, load_pipelines

    app_ = create_app(load_pipelines(checkpoint, device, acceleration), max_pending)
    _echo(f"mofusion app on http://{host}:{port} (API documentation: http://{host}:{port}/docs)")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


# -- export ----------------------------------------------------------------------------------------


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="Checkpoint or run directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the inference-only checkpoint.")],
    half: Annotated[bool, typer.Option("--half", help="Store weights as float16 (half the size).")] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change a sampling default, sample.field=value (e.g. sample.guidance_scale=3), or "
            "data.path (where the training data is found, e.g. the folder a pack was made from).",
        ),
    ] = None,
    anchors: Annotated[
        str | None,
        typer.Option(
            "--anchors",
            help="Text models: (re)build the prompt anchors from this data set's training split.",
        ),
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="Cache for the data set and caption embeddings.")] = None,
) -> None:
    """Write an inference-only copy of a checkpoint (EMA weights, config, normaliser; no optimiser)."""
    from .checkpoint import load_checkpoint, save_checkpoint

    for assignment in set_ or []:
        key = assignment.split("=", 1)[0].strip()
        if not (key.startswith("sample.") or key == "data.path"):
            raise MofusionError(
                f"--set {assignment}: export changes only sampling defaults (sample.*) and data.path"
            )
    ckpt = load_checkpoint(checkpoint)
    config = ckpt.config.updated(assignments=set_ or [], source="the command line")
    prompt_anchors = ckpt.anchors if anchors is None else _build_anchors(config, anchors, cache)
    asked = any(a.replace(" ", "").startswith("sample.anchor_prompts=") for a in set_ or [])
    if asked and config.sample.anchor_prompts and prompt_anchors is None:
        raise MofusionError(f"{checkpoint}: has no prompt anchors; pass --anchors DATA to build them")
    save_checkpoint(
        out,
        config,
        ckpt.spec,
        ckpt.normalizer,
        ckpt.weights,
        ckpt.step,
        ckpt.file_scale,
        half=half,
        anchors=prompt_anchors,
    )
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    typer.echo(f"{out} ({size:.1f} MiB)")


def _build_anchors(config: MofusionConfig, data: str, cache: Path | None) -> PromptAnchors:
    """Prompt anchors of a text model from the training split of ``data`` (as training makes them)."""
    from .conditioning import CaptionBank, PromptAnchors
    from .config import DataConfig
    from .data.dataset import load_dataset

    if config.condition.kind != "text":
        raise MofusionError("--anchors: prompt anchors are for text models")
    data_cfg = DataConfig(**{**config.data.__dict__, "path": str(data)})
    part = load_dataset(data_cfg, cache, progress=False).subset("train")
    built = PromptAnchors.from_bank(CaptionBank(part.labels, part.names, config.condition, cache))
    if built is None:
        raise MofusionError(f"{data}: its captions are written per clip; anchors need labelled classes")
    return built


# -- render ----------------------------------------------------------------------------------------


@app.command("render")
def render_command(
    source: Annotated[Path, typer.Argument(help="A .bvh file, or a .npy/.npz written by generate.")],
    out: Annotated[Path, typer.Argument(help="Output .mp4 or .gif.")],
    scale: Annotated[float, typer.Option(help="BVH length unit in metres (0: guess; cm -> 0.01).")] = 0.0,
    music: Annotated[
        Path | None, typer.Option("--music", help="A song to play with it (mp4 only), in step with frame 0.")
    ] = None,
    music_start: Annotated[float, typer.Option(help="Where in the song the motion starts (seconds).")] = 0.0,
) -> None:
    """Draw a motion file as a stick-figure video (with its music, when given)."""
    from .bvh import read_bvh
    from .data.dataset import guess_file_scale
    from .errors import InputError
    from .export import check_output
    from .render import VIDEO_SUFFIXES, render_video

    out = check_output(out, VIDEO_SUFFIXES)
    suffix = source.suffix.lower()
    if suffix == ".bvh":
        data = read_bvh(source)
        factor = scale or guess_file_scale(data.skeleton)
        positions = data.positions()[None] * factor
        parents, names, fps = data.skeleton.parents, data.skeleton.names, data.fps
    elif suffix in (".npy", ".npz"):
        positions, parents, names, fps = _read_positions(source)
    else:
        raise InputError(source, "expected a .bvh, .npy or .npz file")
    render_video(out, list(positions), parents, fps, names, audio=music, audio_start=music_start)
    typer.echo(str(out))


def _read_positions(source: Path):  # type: ignore[no-untyped-def]
    import numpy as np

    from ._io import NUMPY_READ_ERRORS
    from .errors import InputError

    try:
        if source.suffix.lower() == ".npz":
            with np.load(source, allow_pickle=False) as z:
                positions, fps = z["positions"], float(z["fps"])
                parents, names = [int(p) for p in z["parents"]], [str(n) for n in z["joint_names"]]
        else:
            positions = np.load(source, allow_pickle=False)
            sidecar = source.with_suffix(source.suffix + ".json")
            if not sidecar.is_file():
                raise InputError(source, f"needs its sidecar {sidecar.name} (fps, parents) to be rendered")
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            fps, parents, names = float(meta["fps"]), list(meta["parents"]), list(meta["joint_names"])
    except (*NUMPY_READ_ERRORS, json.JSONDecodeError) as exc:
        raise InputError(source, f"cannot read joint positions ({type(exc).__name__}: {exc})") from None
    if positions.ndim == 3:
        positions = positions[None]
    if positions.ndim != 4 or positions.shape[-1] != 3 or positions.shape[2] != len(parents):
        raise InputError(source, f"expected positions (N, T, {len(parents)}, 3), got {positions.shape}")
    return positions, parents, names, fps


@app.command("plot")
def plot_command(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (or metrics.jsonl files).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .png.")],
    label: Annotated[list[str] | None, typer.Option("--label", help="A label per run.")] = None,
) -> None:
    """Plot training and validation loss curves of one or more runs."""
    from .export import check_output
    from .plots import plot_curves

    out = check_output(out, (".png", ".pdf", ".svg"))
    if label and len(label) != len(runs):
        raise MofusionError("give one --label per run")
    typer.echo(str(plot_curves(runs, out, label)))


# -- data ------------------------------------------------------------------------------------------


@data_app.command("prepare")
def data_prepare(
    data: Annotated[str, typer.Option("--data", help="Data folder.")],
    subset: _Subsets = None,
    fps: Annotated[float, typer.Option(help="Frame rate of the features.")] = 20.0,
    cache: _Cache = None,
) -> None:
    """Process a data set into the feature cache and print what it holds."""
    from .config import DataConfig
    from .data.dataset import load_dataset

    dataset = load_dataset(DataConfig(path=data, subsets=list(subset or []), fps=fps), cache)
    c = dataset.collection
    typer.echo(
        f"{c.num_clips} clips, {len(c.features)} frames "
        f"({len(c.features) / fps / 60:.1f} min at {fps:g} fps); "
        f"skeleton {c.spec.skeleton.describe()}; features {c.spec.describe()}; "
        f"split {', '.join(f'{k} {len(v)}' for k, v in dataset.split.items())} ({dataset.split_path})"
    )


@data_app.command("pack")
def data_pack(
    data: Annotated[str, typer.Option("--data", help="Data folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz.")],
    subset: _Subsets = None,
    fps: Annotated[
        float | None, typer.Option(help="Frame rate (default 20; 25 for music data, as the dance presets).")
    ] = None,
    every: Annotated[
        int, typer.Option(help="Keep every N-th clip (a small sample, e.g. for a throughput benchmark).")
    ] = 1,
    cache: _Cache = None,
) -> None:
    """Write the resampled motions as a compact .npz that --data accepts (to carry to a GPU machine).

    Music data (dance-with-melody, AIST++) is packed as float16 features with each frame's music
    features and the data set's split, so the machine that trains needs neither the songs nor an
    audio library."""
    from .config import DataConfig
    from .data.dataset import is_music_data, write_motion_pack

    if every < 1:
        raise MofusionError(f"--every must be at least 1, got {every}")
    if is_music_data(data):
        import dataclasses

        import numpy as np

        from .audio import AudioFeatureConfig
        from .config import ConditionConfig
        from .data.dataset import build_music_collection

        config = DataConfig(path=data, fps=fps or 25.0)
        defaults = ConditionConfig()
        music = AudioFeatureConfig(fps=config.fps, n_mels=defaults.music_mels, onset=defaults.music_onset)
        collection, split, _ = build_music_collection(config, music, cache)
        collection.split, collection.music = split, dataclasses.asdict(music)
        collection.save(out, dtype=np.float16)
    else:
        config = DataConfig(path=data, subsets=list(subset or []), fps=fps or 20.0)
        collection = write_motion_pack(config, out, cache, every=every)
    typer.echo(f"{out} ({out.stat().st_size / 2**20:.1f} MiB, {collection.num_clips} clips)")


# -- evaluate --------------------------------------------------------------------------------------


@evaluate_app.command("kinematics")
def evaluate_kinematics(
    checkpoint: Annotated[list[Path], typer.Option("--checkpoint", "-c", help="Model(s) to compare.")],
    data: Annotated[
        str | None, typer.Option("--data", help="Data for the real rows (default: the first model's).")
    ] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Motions per model.")] = 20,
    seconds: Annotated[float, typer.Option(help="Duration of each motion.")] = 6.0,
    seed: _Seed = 0,
    sampler: Annotated[
        str | None, typer.Option(help="ddpm, ddim, dpm or dpm-sde (default: each checkpoint's).")
    ] = None,
    steps: _Steps = None,
    out: _TableOut = None,
    label: _Labels = None,
    device: _Device = "auto",
    cache: _Cache = None,
) -> None:
    """Bone-length consistency, left/right symmetry and foot skating of generated vs real motions."""
    if label and len(label) != len(checkpoint):
        raise MofusionError("give one --label per --checkpoint")
    from .evaluation import format_table, kinematics_table

    rows = kinematics_table(
        checkpoint, data, num_samples, seconds, seed, sampler, steps, device, cache, label
    )
    typer.echo(format_table(rows))
    _write_json(out, rows)


@evaluate_app.command("text")
def evaluate_text(
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", "-c", help="Text model(s) (default: the packaged one)."),
    ] = None,
    label: _Labels = None,
    data: Annotated[str | None, typer.Option("--data", help="Data (default: the first model's).")] = None,
    evaluator: Annotated[
        Path | None, typer.Option("--evaluator", help="Evaluator folder (default: the packaged one).")
    ] = None,
    ddim: Annotated[
        list[int] | None, typer.Option("--ddim", help="Also rows of the first model with DDIM and N steps.")
    ] = None,
    guidance: Annotated[
        list[float] | None,
        typer.Option("--guidance", help="Rows of the first model at these guidance scales (a sweep)."),
    ] = None,
    split: Annotated[
        str, typer.Option(help="test (held-out wording) or val (for choosing settings).")
    ] = "test",
    replications: Annotated[int, typer.Option(help="Repetitions for the 95 % intervals.")] = 10,
    no_multimodality: Annotated[
        bool,
        typer.Option(
            "--no-multimodality",
            help="Skip MultiModality (10 more motions for each of 16 prompts, per replication).",
        ),
    ] = False,
    seed: _Seed = 0,
    out: _TableOut = None,
    device: _Device = "auto",
    cache: _Cache = None,
) -> None:
    """R-Precision, FID, MM-Dist, Diversity and MultiModality (Guo et al. 2022) of text models, beside
    real test motions and two retrieval baselines."""
    from .checkpoint import default_checkpoint
    from .pipeline import MotionPipeline
    from .text_evaluation import ModelRow, format_text_table, text_table

    if split not in ("test", "val"):
        raise MofusionError(f"--split must be test or val, got {split!r}")
    paths = list(checkpoint or [default_checkpoint()])
    if label and len(label) != len(paths):
        raise MofusionError("give one --label per --checkpoint")
    pipes = [MotionPipeline.from_checkpoint(p, device) for p in paths]
    names = list(label or [str(p) for p in paths])
    rows = []
    if guidance:
        rows += [ModelRow(f"{names[0]}, guidance {g:g}", pipes[0], guidance=g) for g in guidance]
    else:
        rows += [ModelRow(n, p) for n, p in zip(names, pipes, strict=True)]
    rows += [ModelRow(f"{names[0]}, DDIM {n}", pipes[0], sampler="ddim", steps=n) for n in ddim or []]
    table = text_table(
        rows,
        data,
        evaluator,
        replications,
        split,
        seed=seed,
        cache=cache,
        multimodality_rows=not no_multimodality,
    )
    typer.echo(format_text_table(table))
    _write_json(out, table)


@evaluate_app.command("prompts")
def evaluate_prompts(
    text: Annotated[list[str], typer.Option("--text", "-t", help="A prompt (repeat for several).")],
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", "-c", help="Text model (default: the packaged one).")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", help="Data whose labels are the candidates.")] = None,
    evaluator: Annotated[
        Path | None, typer.Option("--evaluator", help="Evaluator folder (default: the packaged one).")
    ] = None,
    samples: Annotated[int, typer.Option("--num-samples", "-n", help="Motions per prompt.")] = 4,
    seed: _Seed = 0,
    out: _TableOut = None,
    device: _Device = "auto",
    cache: _Cache = None,
) -> None:
    """The evaluator's nearest label for generations of each prompt (does the motion match the words?)."""
    from .checkpoint import default_checkpoint
    from .encoders import check_text
    from .pipeline import MotionPipeline
    from .text_evaluation import prompt_table

    prompts = [check_text(t) for t in text]
    pipe = MotionPipeline.from_checkpoint(checkpoint or default_checkpoint(), device)
    rows = prompt_table(pipe, prompts, data, evaluator, samples, seed=seed, cache=cache)
    for row in rows:
        typer.echo(f"{row['prompt']:45} {', '.join(row['top1_labels'])}")
    _write_json(out, rows)


@evaluate_app.command("train-evaluator")
def evaluate_train_evaluator(
    data: Annotated[str, typer.Option("--data", help="Bandai-Namco folder (captions come from its labels).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the evaluator's weights.")],
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 3000,
    seed: _Seed = 0,
    cache: _Cache = None,
    quiet: _Quiet = False,
) -> None:
    """Train the contrastive text-motion evaluator on the training split (both Bandai-Namco sets)."""
    from .config import DataConfig
    from .data.dataset import load_dataset
    from .evaluator import EvaluatorConfig, save_evaluator, train_evaluator

    if steps < 1:
        raise MofusionError(f"--steps must be positive, got {steps}")
    dataset = load_dataset(DataConfig(path=data), cache, progress=not quiet)
    model, info = train_evaluator(dataset, EvaluatorConfig(steps=steps, seed=seed), cache, not quiet)
    typer.echo(f"final contrastive loss {info['final_loss']:.4f}")
    typer.echo(str(save_evaluator(model, out)))


@evaluate_app.command("inbetween")
def evaluate_inbetween(
    checkpoint: Annotated[list[Path], typer.Option("--checkpoint", "-c", help="Model(s) to compare.")],
    label: _Labels = None,
    method: Annotated[
        list[str] | None, typer.Option("--method", help="A method per checkpoint (replace, condition, both).")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Data for the test windows (default: the first model's).")
    ] = None,
    max_windows: Annotated[
        int | None, typer.Option("--max-windows", help="Evaluate a random subset of test windows.")
    ] = None,
    seed: _Seed = 0,
    sampler: _Sampler = None,
    steps: _Steps = None,
    split: Annotated[str, typer.Option(help="test (to report), or val (to choose settings on).")] = "test",
    out: _TableOut = None,
    device: _Device = "auto",
    cache: _Cache = None,
) -> None:
    """The LAFAN1 in-betweening benchmark (L2Q, L2P, NPSS at 5/15/30/45 frames) on the test split."""
    from .evaluation import format_inbetween, inbetween_table

    for name, values in (("--label", label), ("--method", method)):
        if values and len(values) != len(checkpoint):
            raise MofusionError(f"give one {name} per --checkpoint")
    for m in method or []:
        _check_method(m)
    if split not in ("test", "val"):
        raise MofusionError(f"--split must be test or val, not {split!r}")
    table = inbetween_table(
        checkpoint, data, seed, sampler, steps, device, cache, label, method, max_windows, split=split
    )
    typer.echo(format_inbetween(table))
    _write_json(out, table)


@evaluate_app.command("dance")
def evaluate_dance(
    checkpoint: Annotated[list[Path], typer.Option("--checkpoint", "-c", help="Music model(s) to compare.")],
    data: Annotated[str, typer.Option("--data", help="The dance-with-melody folder or archive.")],
    label: _Labels = None,
    seed: _Seed = 0,
    segment_seconds: Annotated[
        float, typer.Option("--segment-seconds", help="Length of the compared segments.")
    ] = 10.0,
    steps: _Steps = None,
    overlap: Annotated[
        int | None, typer.Option(help="Frames each window shares with the last (default: half).")
    ] = None,
    guidance: Annotated[
        float | None, typer.Option(help="Classifier-free guidance (default: the checkpoint's).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Noise each denoising step adds, 0-2 (default: the checkpoint's).")
    ] = None,
    max_dances: Annotated[
        int | None, typer.Option("--max-dances", help="Evaluate the first N dances of the split.")
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="test (to report), or train (every other training dance: to choose sampling settings on)."
        ),
    ] = "test",
    out: _TableOut = None,
    device: _Device = "auto",
    acceleration: Annotated[
        str, typer.Option(help="Sampling speed-ups, as for generate (auto: the device's default).")
    ] = "auto",
    cache: _Cache = None,
    quiet: _Quiet = False,
) -> None:
    """Music to dance on the held-out songs: FID_k, FID_g, Div_k, Div_g, Beat Align Score, foot
    skating and window seams, with the real test dances and a real-segments baseline in the same run."""
    from .dance_evaluation import dance_table, format_dance_table

    if label and len(label) != len(checkpoint):
        raise MofusionError("give one --label per --checkpoint")
    if not 2 <= segment_seconds <= 60:
        raise MofusionError(f"--segment-seconds must be between 2 and 60, got {segment_seconds}")
    if split not in ("test", "train"):
        raise MofusionError(f"--split must be test or train, got {split!r}")
    _check_temperature(temperature)
    table = dance_table(
        checkpoint, data, label, seed, segment_seconds, steps, overlap, guidance, device, cache, max_dances,
        not quiet, split, temperature, acceleration,
    )  # fmt: skip
    typer.echo(format_dance_table(table))
    _write_json(out, table)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn user errors into one line and exit status 2."""
    try:
        app(args=argv, prog_name="mofusion")
    except SystemExit as exc:  # typer exits on its own after a command or a usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except MofusionError as exc:
        print(f"mofusion: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mofusion: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
