"""A bounded job queue with one worker thread, for the server's generation requests.

Generation is seconds of CPU or GPU work: it runs off the event loop, one job at a time (the model
is not shared across threads), with at most ``max_pending`` jobs waiting. A full queue refuses at
once (the server answers 429 with Retry-After) instead of letting requests pile up; every accepted
job ends ``done`` or ``failed`` with a readable error, and its progress (0..1) is visible while it
runs. Finished jobs are kept for ``keep`` later jobs (their motions stay downloadable).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import MofusionError

Progress = Callable[[float], None]


class JobCancelled(Exception):
    """Raised inside a job's work at its next progress report once the queue is closing."""


class QueueFull(Exception):
    """No room for another job; ``retry_after`` is a fair guess in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    id: str
    kind: str
    status: str = "queued"  # queued | running | done | failed
    progress: float = 0.0
    error: str | None = None
    result: Any = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "progress": round(self.progress, 3),
                "error": self.error}  # fmt: skip


class JobQueue:
    def __init__(self, max_pending: int = 8, keep: int = 200) -> None:
        self.max_pending = max_pending
        self.keep = keep
        self._queue: queue.Queue[tuple[Job, Callable[[Progress], Any]] | None] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._durations: list[float] = []
        self._pending = 0
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run, name="mofusion-worker", daemon=True)
        self._worker.start()

    def submit(self, kind: str, work: Callable[[Progress], Any]) -> Job:
        """Queue ``work(progress)``; raises :class:`QueueFull` when ``max_pending`` jobs wait."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise QueueFull(self._retry_after())
            job = Job(f"{next(self._ids):06d}", kind)
            self._jobs[job.id] = job
            self._pending += 1
            while len(self._jobs) > self.keep + self.max_pending:
                oldest = next(iter(self._jobs.values()))
                if oldest.status not in ("done", "failed"):
                    break
                self._jobs.popitem(last=False)
        self._queue.put((job, work))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    @property
    def pending(self) -> int:
        return self._pending

    def _retry_after(self) -> int:
        """Seconds until a place is likely free: one typical job (the median of the last 20), the
        time the running one needs to finish and leave room."""
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else 5.0
        return max(1, int(round(typical)))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, work = item
            job.status, job.started = "running", time.monotonic()

            def progress(value: float, job: Job = job) -> None:
                if self._stopping.is_set():
                    raise JobCancelled
                job.progress = min(1.0, max(job.progress, float(value)))

            try:
                if self._stopping.is_set():
                    raise JobCancelled
                job.result = work(progress)
                job.progress, job.status = 1.0, "done"
            except JobCancelled:
                job.status, job.error = "failed", "the server stopped before this job finished"
            except MofusionError as exc:
                job.status, job.error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - a failed job must never stop the worker
                job.status, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
            finally:
                job.finished = time.monotonic()
                with self._lock:
                    self._pending -= 1
                    self._durations = (self._durations + [job.finished - job.started])[-20:]

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker and wait for it (at most ``timeout`` seconds): the running job ends at its
        next progress report (a denoising step), the queued ones fail without running. A worker
        still inside PyTorch when the interpreter exits aborts the process ("terminate called
        without an active exception", seen on Ctrl-C during a generation)."""
        self._stopping.set()
        self._queue.put(None)
        if self._worker is not threading.current_thread():
            self._worker.join(timeout)
