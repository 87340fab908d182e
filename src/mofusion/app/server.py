"""The browser app's server: a FastAPI JSON API (OpenAPI at /docs) and the single page that uses it.

Generation and edits run in a bounded :class:`~mofusion.app.jobs.JobQueue` off the event loop; the
page polls a job for its progress, then fetches the motion's joint positions for the three.js
viewer. Every refusal is a JSON ``{"detail": ...}`` with its status: 413 (upload too large), 415
(not a BVH or a song), 422 (bad values, empty text, a corrupt file), 404 (unknown job or motion), 409 (no
model for the request), 429 with Retry-After (queue full). Nothing is fetched from the network: the
page and three.js are served from the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from ..checkpoint import packaged_name
from ..encoders import check_text
from ..errors import MofusionError
from ..motion import Motion
from ..pipeline import MotionPipeline
from .jobs import JobQueue, Progress, QueueFull

MAX_BVH_BYTES = 20 * 2**20
MAX_AUDIO_BYTES = 50 * 2**20
MAX_SECONDS = 60.0
MAX_SAMPLES = 8
EDITING_MODEL = packaged_name(edit=True)
"""Edits that name no model and carry no text run on it when it is loaded (the default)."""
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
AUDIO_TYPE_PREFIXES = ("audio/", "application/octet-stream", "video/ogg")
BVH_TYPES = {"", "application/octet-stream", "text/plain", "application/x-bvh", "model/bvh", "text/x-bvh"}


class GenerateRequest(BaseModel):
    """A text (or unconditional) generation."""

    # a misspelt field ("second") is refused (422), not ignored for its default
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=1000, description="What the motion shows (text models).")
    seconds: float = Field(6.0, gt=0, le=MAX_SECONDS, description="Duration of each motion.")
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="How many motions (shown side by side).")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    guidance: float | None = Field(None, ge=0, le=20, description="Classifier-free guidance scale.")
    steps: int | None = Field(None, ge=1, le=1000, description="Denoising steps (default: the model's).")
    model: str | None = Field(None, description="Name of a loaded model (default: the first).")


@dataclass
class StoredMotion:
    id: str
    motion: Motion
    positions: np.ndarray  # (T, J, 3) metres
    fps: float
    label: str
    kept: np.ndarray | None = None  # frames that came from the input (edits)
    file_scale: float = 1.0  # metres per BVH unit of the model's data (BVH downloads use its units)


class MotionStore:
    """Results of finished jobs, by id, the oldest dropped beyond ``keep``."""

    def __init__(self, keep: int = 400) -> None:
        self.keep = keep
        self._items: OrderedDict[str, StoredMotion] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, item: StoredMotion) -> None:
        with self._lock:
            self._items[item.id] = item
            while len(self._items) > self.keep:
                self._items.popitem(last=False)

    def get(self, motion_id: str) -> StoredMotion:
        with self._lock:
            item = self._items.get(motion_id)
        if item is None:
            raise HTTPException(404, f"no motion {motion_id!r} (it may have expired)")
        return item


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_app(
    pipelines: dict[str, MotionPipeline],
    max_pending: int = 8,
    jobs: JobQueue | None = None,
) -> FastAPI:
    """The app around loaded models (``{name: pipeline}``; the first is the default)."""
    if not pipelines:
        raise MofusionError("the server needs at least one model")
    queue = jobs or JobQueue(max_pending)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # on shutdown (Ctrl-C): the running job stops at its next step and the worker is joined
        await asyncio.to_thread(queue.close)

    app = FastAPI(
        title="mofusion",
        description="Text-to-motion, music-to-dance and editing with a 1-D convolutional diffusion U-Net.",
        version="0.1.0",
        lifespan=lifespan,
    )
    store = MotionStore()
    render_lock = threading.Lock()
    names = list(pipelines)
    first = pipelines[names[0]]
    static = Path(str(resources.files("mofusion.app") / "static"))

    @app.exception_handler(MofusionError)
    async def _mofusion_error(_: Request, exc: MofusionError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return _error(429, str(exc), {"Retry-After": str(exc.retry_after)})

    def pipeline(name: str | None) -> MotionPipeline:
        if name is None:
            return first
        if name not in pipelines:
            raise HTTPException(404, f"no model {name!r}; loaded: {', '.join(names)}")
        return pipelines[name]

    results = itertools.count(1)

    def store_motions(
        motions: list[Motion], fps: float, label: str, kept: Any = None, file_scale: float = 1.0
    ) -> list[str]:
        """Keep a job's motions (ids of their own: the job's id is not known inside its work)."""
        ids = []
        batch = next(results)
        for i, motion in enumerate(motions):
            item = StoredMotion(f"m{batch:06d}-{i}", motion, motion.positions(), fps, label, kept, file_scale)
            store.add(item)
            ids.append(item.id)
        return ids

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(static / "index.html")

    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """Loaded models, the skeleton and the server's limits."""
        skeleton = first.spec.skeleton
        return {
            "models": [
                {
                    "name": n,
                    "text": p.is_text_model,
                    "fps": p.fps,
                    "sampler": p.config.sample.sampler,
                    "steps": p.config.sample.steps,
                    "guidance": p.config.sample.guidance_scale,
                }
                for n, p in pipelines.items()
            ],  # fmt: skip
            "skeleton": {"names": list(skeleton.names), "parents": list(skeleton.parents)},
            "music": bool(music_models),
            "limits": {
                "max_seconds": MAX_SECONDS,
                "max_samples": MAX_SAMPLES,
                "max_bvh_bytes": MAX_BVH_BYTES,
                "max_audio_bytes": MAX_AUDIO_BYTES,
                "max_pending": queue.max_pending,
            },  # fmt: skip
        }

    @app.post("/api/generate", status_code=202)
    def generate(request: GenerateRequest) -> dict[str, Any]:
        """Queue a generation; poll ``/api/jobs/{id}``."""
        pipe = pipeline(request.model)
        text = None
        if request.text is not None:
            text = check_text(request.text, "text")
            if not pipe.is_text_model:
                raise HTTPException(422, "this model is not a text model; leave the text empty")
        label = text or "unconditional"

        def work(progress: Progress) -> dict[str, Any]:
            frames = pipe.frames_for(request.seconds)
            cond = mask = read_with = None
            if text is not None:
                cond, mask, read_with = pipe.read_prompts([text], repeat=request.samples)
            steps = request.steps or pipe.config.sample.steps
            total = steps * request.samples

            done = [0]

            def step(index: int, _: Any) -> None:
                done[0] += 1
                progress(0.9 * done[0] / total)

            result = pipe.generate(request.samples, frames, seed=request.seed, steps=request.steps,
                                   guidance_scale=request.guidance, cond=cond, cond_mask=mask,
                                   callback=step, batch_size=request.samples)  # fmt: skip
            motions = pipe.to_motions(result.features)
            out = {"motions": store_motions(motions, pipe.fps, label, file_scale=pipe.file_scale)}
            if read_with is not None:
                out["read_with"] = read_with[0]
            return out

        job = queue.submit("generate", work)
        return {"job": job.id, "status": job.status}

    @app.post("/api/edit", status_code=202)
    async def edit(
        request: Request,
        file: Annotated[UploadFile | None, File(description="A BVH of the model's skeleton.")] = None,
        motion: Annotated[str | None, Form(description="Or the id of a motion made here.")] = None,
        keep: Annotated[str | None, Form(description="Frames to keep, e.g. 0-30,120-150.")] = None,
        regenerate: Annotated[
            str | None, Form(description="Body part to make anew, e.g. upper-body.")
        ] = None,
        text: Annotated[str | None, Form(max_length=1000)] = None,
        seed: Annotated[int, Form(ge=0, le=2**31 - 1)] = 0,
        steps: Annotated[int | None, Form(ge=1, le=1000)] = None,
        model: Annotated[str | None, Form()] = None,
    ) -> Any:
        """Keep frames (in-betweening) and/or regenerate a body part of an uploaded or earlier motion."""
        from ..editing import parse_ranges
        from ..tasks import Clip, load_clip, run_edit

        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_BVH_BYTES + 2**16:
            return _error(
                413, f"the upload is {declared / 2**20:.1f} MB; at most {MAX_BVH_BYTES // 2**20} MB"
            )
        # an edit without a named model or a text goes to the packaged editing model when it is loaded
        if model is None and not text and EDITING_MODEL in pipelines:
            model = EDITING_MODEL
        pipe = pipeline(model)
        if (file is None) == (motion is None):
            raise HTTPException(422, "give either a BVH file or the id of a motion")
        text = check_text(text, "text") if text else None
        if keep is None and regenerate is None:
            raise HTTPException(422, "say what to keep (frames) and/or what to regenerate (a body part)")
        if file is not None:
            if (file.content_type or "") not in BVH_TYPES or not (file.filename or "").lower().endswith(
                ".bvh"
            ):
                return _error(415, f"expected a .bvh file, got {file.filename!r} ({file.content_type})")
            data = await file.read(MAX_BVH_BYTES + 1)
            if len(data) > MAX_BVH_BYTES:
                return _error(413, f"the BVH is over {MAX_BVH_BYTES // 2**20} MB")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "upload.bvh"
                path.write_bytes(data)
                try:
                    clip = load_clip(path, pipe)
                except MofusionError as exc:
                    raise HTTPException(422, f"{file.filename}: {str(exc).split(': ', 1)[-1]}") from None
            source = file.filename or "upload.bvh"
        else:
            stored = store.get(motion)  # type: ignore[arg-type]
            clip = Clip(Path(stored.id), stored.fps, stored.positions, stored.motion, None)
            source = stored.label
        frames = (
            parse_ranges(keep, clip.num_frames, "keep") if keep else np.zeros(clip.num_frames, dtype=bool)
        )
        if keep and regenerate is None and frames.all():
            raise HTTPException(422, "the kept frames cover the whole motion: nothing is left to regenerate")

        def work(progress: Progress) -> dict[str, Any]:
            progress(0.05)
            result = run_edit(pipe, clip, frames, regenerate=regenerate, seed=seed, steps=steps, text=text)
            label = f"edit of {source}" + (f": {text}" if text else "")
            out = {"motions": store_motions([result.motion], result.fps, label, result.kept, pipe.file_scale)}
            out["model"] = model or names[0]
            if motion is not None:
                out["source"] = motion  # shown beside the edit
            return out

        job = queue.submit("edit", work)
        return JSONResponse({"job": job.id, "status": job.status}, status_code=202)

    music_models = [n for n, p in pipelines.items() if p.config.condition.kind == "music"]

    @app.post("/api/dance", status_code=202)
    async def dance(
        request: Request,
        audio: Annotated[UploadFile | None, File(description="A song: wav, flac, ogg or mp3.")] = None,
        seconds: Annotated[float, Form(gt=0, le=MAX_SECONDS)] = 30.0,
        seed: Annotated[int, Form(ge=0, le=2**31 - 1)] = 0,
        steps: Annotated[int | None, Form(ge=1, le=1000)] = None,
        model: Annotated[str | None, Form()] = None,
    ) -> Any:
        """A dance to the first ``seconds`` of an uploaded song (needs a music model: ``mofusion
        train --preset dance``); the page plays the song in step with it."""
        from ..dance import generate_dance, song_frames

        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_AUDIO_BYTES + 2**16:
            return _error(
                413, f"the upload is {declared / 2**20:.1f} MB; at most {MAX_AUDIO_BYTES // 2**20} MB"
            )
        if model is None and not music_models:
            return _error(
                409, "no music-to-dance model is loaded (serve --checkpoint a run of --preset dance)"
            )
        pipe = pipeline(model or music_models[0])
        if pipe.config.condition.kind != "music":
            return _error(409, f"{model} is not a music model")
        if audio is None:
            raise HTTPException(422, "upload a song as 'audio'")
        suffix = Path(audio.filename or "").suffix.lower()
        if not (audio.content_type or "").startswith(AUDIO_TYPE_PREFIXES) or suffix not in AUDIO_SUFFIXES:
            return _error(
                415, f"expected a wav, flac, ogg or mp3 file, got {audio.filename!r} ({audio.content_type})"
            )
        data = await audio.read(MAX_AUDIO_BYTES + 1)
        if len(data) > MAX_AUDIO_BYTES:
            return _error(413, f"the song is over {MAX_AUDIO_BYTES // 2**20} MB")
        name = audio.filename or f"song{suffix}"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:  # decoded and checked now, so a bad file is a 422 at once, not a failed job
                frames = song_frames(pipe, path, 0.0, None)
            except MofusionError as exc:
                raise HTTPException(422, f"{name}: {str(exc).split(': ', 1)[-1]}") from None
        frames = frames[: int(round(seconds * pipe.fps))]

        def work(progress: Progress) -> dict[str, Any]:
            progress(0.05)
            (result,) = generate_dance(pipe, [frames], seed=seed, steps=steps)
            progress(0.9)
            motions = pipe.to_motions(result.features[None])
            stored = store_motions(motions, pipe.fps, f"dance to {name}", file_scale=pipe.file_scale)
            return {"motions": stored, "audio_start": 0.0}

        job = queue.submit("dance", work)
        return JSONResponse({"job": job.id, "status": job.status}, status_code=202)

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        job = queue.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        out = job.public()
        if job.status == "done":
            out["motions"] = job.result["motions"]
            for key in ("source", "read_with", "model"):
                if key in job.result:
                    out[key] = job.result[key]
        return out

    @app.get("/api/motions/{motion_id}.json")
    def motion_json(motion_id: str) -> dict[str, Any]:
        """Joint positions for the viewer (metres, Y up), with the skeleton."""
        item = store.get(motion_id)
        skeleton = item.motion.skeleton
        return {
            "id": item.id,
            "label": item.label,
            "fps": item.fps,
            "frames": int(item.positions.shape[0]),
            "parents": list(skeleton.parents),
            "names": list(skeleton.names),
            "positions": np.round(item.positions.astype(np.float64), 4).reshape(-1).tolist(),
            "kept": None if item.kept is None else item.kept.astype(bool).tolist(),
        }

    @app.get("/api/motions/{motion_id}.bvh")
    def motion_bvh(motion_id: str) -> Response:
        from ..bvh import write_bvh

        item = store.get(motion_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.bvh"
            write_bvh(path, item.motion.to_bvh(scale=1.0 / item.file_scale))
            data = path.read_bytes()
        return Response(data, media_type="application/octet-stream", headers=_attachment(f"{motion_id}.bvh"))

    @app.get("/api/motions/{motion_id}.npy")
    def motion_npy(motion_id: str) -> Response:
        item = store.get(motion_id)
        buffer = io.BytesIO()
        np.save(buffer, item.positions.astype(np.float32))
        return Response(buffer.getvalue(), media_type="application/octet-stream",
                        headers=_attachment(f"{motion_id}.npy"))  # fmt: skip

    @app.get("/api/motions/{motion_id}.mp4")
    def motion_mp4(motion_id: str) -> Response:
        from ..render import render_video

        item = store.get(motion_id)
        with render_lock, tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.mp4"
            render_video(path, [item.positions], item.motion.skeleton.parents, item.fps, titles=[item.label])
            data = path.read_bytes()
        return Response(data, media_type="video/mp4", headers=_attachment(f"{motion_id}.mp4"))

    app.state.queue = queue
    app.state.store = store
    return app


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


PACKAGED = {"packaged": (packaged_name(edit=False), False), "packaged-edit": (EDITING_MODEL, True)}
"""``--checkpoint`` words for the packaged models: their name here and whether it is the editing one."""


def load_pipelines(
    checkpoints: list[Path] | None, device: str = "auto", acceleration: str = "auto"
) -> dict[str, MotionPipeline]:
    """``{name: pipeline}`` for the given checkpoints (default: the packaged text model and the
    packaged editing model, which ``packaged`` and ``packaged-edit`` also name, e.g. beside a music
    model)."""
    from ..checkpoint import default_checkpoint

    out: dict[str, MotionPipeline] = {}
    for path in checkpoints or [Path("packaged"), Path("packaged-edit")]:
        packaged = PACKAGED.get(str(path))
        name = packaged[0] if packaged else Path(path).name
        source = default_checkpoint(edit=packaged[1]) if packaged else path
        out[name] = MotionPipeline.from_checkpoint(source, device, acceleration)
    return out
