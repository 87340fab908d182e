"""The browser app: its JSON API (FastAPI's TestClient) with every refusal's status and message, the
bounded queue, and the page in headless Chromium (typed prompt, animated canvas, BVH download)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mofusion.app.jobs import JobQueue
from mofusion.app.server import MAX_BVH_BYTES, create_app, load_pipelines
from mofusion.bvh import read_bvh
from mofusion.errors import MofusionError


@pytest.fixture(scope="module")
def pipelines() -> dict[str, Any]:
    return load_pipelines(None, "cpu")


@pytest.fixture(scope="module")
def client(pipelines: dict[str, Any]) -> TestClient:
    return TestClient(create_app(pipelines))


def _wait(client: TestClient, job: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job}").json()
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not finish")


def _generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/generate", json={"seconds": 1.0, "steps": 2, **body})
    assert response.status_code == 202, response.text
    return _wait(client, response.json()["job"])


def test_info_page_and_docs(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["models"][0]["text"] and info["models"][0]["steps"] == 20
    assert len(info["skeleton"]["parents"]) == len(info["skeleton"]["names"]) == 21
    page = client.get("/")
    assert page.status_code == 200 and "importmap" in page.text and "cdn" not in page.text.lower()
    assert client.get("/static/vendor/three.module.js").status_code == 200
    assert client.get("/static/vendor/LICENSE-three.txt").text.startswith("The MIT License")
    assert "/api/generate" in client.get("/openapi.json").json()["paths"]


def test_generate_then_download_every_format(client: TestClient, tmp_path: Path) -> None:
    state = _generate(client, text="a person waves", samples=2, seed=3)
    assert state["status"] == "done" and state["progress"] == 1.0 and len(state["motions"]) == 2
    assert state["read_with"].startswith("a person waves")  # the packaged model's prompt anchor
    motion = client.get(f"/api/motions/{state['motions'][0]}.json").json()
    assert motion["frames"] == 20 and motion["label"] == "a person waves"
    assert len(motion["positions"]) == 20 * 21 * 3 and np.isfinite(motion["positions"]).all()
    bvh = client.get(f"/api/motions/{state['motions'][0]}.bvh")
    assert bvh.status_code == 200 and "attachment" in bvh.headers["content-disposition"]
    (tmp_path / "m.bvh").write_bytes(bvh.content)
    assert read_bvh(tmp_path / "m.bvh").num_frames == 20
    npy = client.get(f"/api/motions/{state['motions'][1]}.npy")
    (tmp_path / "m.npy").write_bytes(npy.content)
    assert np.load(tmp_path / "m.npy").shape == (20, 21, 3)
    mp4 = client.get(f"/api/motions/{state['motions'][1]}.mp4")
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4" and len(mp4.content) > 1000


def test_edit_an_earlier_motion_and_an_upload(client: TestClient, tmp_path: Path) -> None:
    first = _generate(client, text="a person walks", seconds=2.0)["motions"][0]
    response = client.post("/api/edit", data={"motion": first, "keep": "0-9,30-39", "steps": "2"})
    assert response.status_code == 202, response.text
    state = _wait(client, response.json()["job"])
    assert state["status"] == "done" and state["source"] == first, state
    assert state["model"] == "packaged editing model"  # no text: the model trained with masks
    edited = client.get(f"/api/motions/{state['motions'][0]}.json").json()
    original = client.get(f"/api/motions/{first}.json").json()
    kept = np.array(edited["kept"])
    assert kept[:10].all() and not kept[10:30].any() and kept[30:40].all()
    a = np.array(edited["positions"]).reshape(-1, 21, 3)
    b = np.array(original["positions"]).reshape(-1, 21, 3)
    assert np.abs(a[kept] - b[kept]).max() < 1e-3  # kept frames come back (to the JSON's 0.1 mm)
    bvh = client.get(f"/api/motions/{first}.bvh").content
    upload = client.post(
        "/api/edit",
        files={"file": ("clip.bvh", bvh, "application/octet-stream")},
        data={"regenerate": "upper-body", "steps": "2"},
    )
    assert upload.status_code == 202, upload.text
    assert _wait(client, upload.json()["job"])["status"] == "done"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"text": "   "}, 422, "text is empty"),
        ({"text": "x" * 1001}, 422, "1000"),
        ({"text": "a person", "seconds": 0}, 422, "greater than 0"),
        ({"text": "a person", "seconds": 10_000}, 422, "less than or equal"),
        ({"text": "a person", "samples": 9}, 422, "less than or equal"),
        ({"text": "a person", "guidance": -1}, 422, "greater than or equal"),
        ({"text": "a person", "model": "nope"}, 404, "no model"),
        ({"text": "a person", "second": 3}, 422, "Extra inputs are not permitted"),
    ],
)
def test_generate_refusals(client: TestClient, body: dict[str, Any], status: int, words: str) -> None:
    response = client.post("/api/generate", json=body)
    assert response.status_code == status
    assert words in str(response.json()["detail"])


def test_edit_refusals(client: TestClient) -> None:
    bvh = ("clip.bvh", b"HIERARCHY\nROOT Hips\n{\n", "application/octet-stream")
    cases = [
        (
            {"files": {"file": ("a.png", b"\x89PNG", "image/png")}, "data": {"keep": "0-3"}},
            415,
            "expected a .bvh",
        ),
        ({"files": {"file": bvh}, "data": {"keep": "0-3"}}, 422, "clip.bvh"),
        ({"data": {"keep": "0-3"}}, 422, "either a BVH file or the id"),
        ({"data": {"motion": "000000-0", "keep": "0-3"}}, 404, "no motion"),
        (
            {"files": {"file": ("big.bvh", b"0" * (MAX_BVH_BYTES + 2**17), "text/plain")}},
            413,
            "at most 20 MB",
        ),
    ]
    for kwargs, status, words in cases:
        response = client.post("/api/edit", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (kwargs.get("data"), response.text)
        assert words in str(response.json()["detail"])
    assert client.post("/api/dance", files={"audio": ("a.wav", b"RIFF", "audio/wav")}).status_code == 409
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/info").status_code == 200  # still serving


def test_dance_to_an_uploaded_song(pipelines: dict[str, Any], tiny_music_model: Path, tmp_path: Path) -> None:
    import io

    import soundfile

    from mofusion.app.server import MAX_AUDIO_BYTES

    both = load_pipelines([Path("packaged"), tiny_music_model], "cpu")
    assert list(both) == ["packaged text model", "tiny-music"]
    client = TestClient(create_app(both))
    assert client.get("/api/info").json()["music"] is True
    buffer = io.BytesIO()
    t = np.arange(22050 * 4) / 22050
    soundfile.write(buffer, 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0), 22050,
                    format="WAV")  # fmt: skip
    song = buffer.getvalue()
    response = client.post("/api/dance", files={"audio": ("song.wav", song, "audio/wav")},
                           data={"seconds": "3", "steps": "2", "seed": "1"})  # fmt: skip
    assert response.status_code == 202, response.text
    state = _wait(client, response.json()["job"])
    assert state["status"] == "done", state
    motion = client.get(f"/api/motions/{state['motions'][0]}.json").json()
    assert motion["frames"] == 75 and motion["fps"] == 25.0 and len(motion["names"]) == 25
    assert motion["label"] == "dance to song.wav"
    bvh = client.get(f"/api/motions/{state['motions'][0]}.bvh")
    (tmp_path / "d.bvh").write_bytes(bvh.content)
    assert read_bvh(tmp_path / "d.bvh").num_frames == 75
    silent = io.BytesIO()
    soundfile.write(silent, np.zeros(22050 * 3), 22050, format="WAV")
    cases = [
        ({"files": {"audio": ("song.txt", song, "text/plain")}}, 415, "wav, flac, ogg or mp3"),
        ({"files": {"audio": ("quiet.wav", silent.getvalue(), "audio/wav")}}, 422, "quiet.wav: is silent"),
        ({"files": {"audio": ("bad.mp3", b"not a song", "audio/mpeg")}}, 422, "bad.mp3: cannot read"),
        ({"files": {"audio": ("big.wav", b"0" * (MAX_AUDIO_BYTES + 2**17), "audio/wav")}}, 413, "at most 50 MB"),
        ({"files": {"audio": ("song.wav", song, "audio/wav")}, "data": {"seconds": "0"}}, 422, "greater than"),
        ({"files": {"audio": ("song.wav", song, "audio/wav")}, "data": {"model": "packaged text model"}}, 409,
         "not a music model"),
    ]  # fmt: skip
    for kwargs, status, words in cases:
        response = client.post("/api/dance", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (kwargs.get("data"), response.text)
        assert words in str(response.json()["detail"]), response.text
    assert client.get("/api/info").status_code == 200


def test_a_full_queue_answers_429_with_retry_after(pipelines: dict[str, Any]) -> None:
    queue = JobQueue(max_pending=1)
    client = TestClient(create_app(pipelines, jobs=queue))
    release = threading.Event()
    blocker = queue.submit("test", lambda progress: release.wait(10))
    response = client.post("/api/generate", json={"text": "a person walks", "seconds": 1.0, "steps": 2})
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    release.set()
    deadline = time.monotonic() + 10
    while queue.get(blocker.id).status != "done" and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.02)
    assert client.post("/api/generate", json={"text": "a person walks", "steps": 2}).status_code == 202


def test_a_failing_job_does_not_stop_the_worker() -> None:
    queue = JobQueue(max_pending=4)

    def fail(progress: Any) -> None:
        raise MofusionError("something clear")

    def crash(progress: Any) -> None:
        raise ZeroDivisionError("boom")

    jobs = [queue.submit("t", fail), queue.submit("t", crash), queue.submit("t", lambda p: p(0.5) or 42)]
    deadline = time.monotonic() + 10
    while any(j.status not in ("done", "failed") for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [j.status for j in jobs] == ["failed", "failed", "done"]
    assert jobs[0].error == "something clear" and "ZeroDivisionError" in (jobs[1].error or "")
    assert jobs[2].result == 42 and queue.pending == 0


def test_closing_the_queue_stops_the_running_job_and_the_queued_ones() -> None:
    queue = JobQueue(max_pending=4)
    started, ran = threading.Event(), threading.Event()

    def steps(progress: Any) -> None:  # a generation: a progress report per denoising step
        started.set()
        while True:
            progress(0.5)
            time.sleep(0.01)

    running, waiting = queue.submit("t", steps), queue.submit("t", lambda p: ran.set())
    assert started.wait(10)
    queue.close(timeout=10)
    assert not queue._worker.is_alive()
    assert running.status == waiting.status == "failed" and not ran.is_set()
    assert running.error == "the server stopped before this job finished"


def test_ctrl_c_during_a_generation_ends_the_server_cleanly(tmp_path: Path) -> None:
    """The worker thread is stopped and joined on shutdown: left inside PyTorch as the interpreter
    exited, it aborted the process ("terminate called without an active exception")."""
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    from conftest import signal_when_ready

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mofusion.cli", "serve", "--port", str(port), "--device", "cpu"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    job: list[str] = []

    def generating() -> bool:
        """The server is up, and a long generation was submitted and is running."""
        try:
            if not job:
                body = json.dumps({"text": "a person walks", "seconds": 60, "samples": 4}).encode()
                request = urllib.request.Request(
                    f"{base}/api/generate", body, {"content-type": "application/json"}, method="POST"
                )
                job.append(json.loads(urllib.request.urlopen(request, timeout=10).read())["job"])
            state = json.loads(urllib.request.urlopen(f"{base}/api/jobs/{job[0]}", timeout=5).read())
            return bool(state["status"] == "running")
        except OSError:  # not listening yet
            return False

    stderr = signal_when_ready(server, generating, signal.SIGINT)
    assert "terminate called" not in stderr, stderr[-2000:]
    assert server.returncode == 0, stderr[-2000:]


# -- the page in a real browser -------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
def test_the_page_generates_animates_and_downloads(pipelines: dict[str, Any], tmp_path: Path) -> None:
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(pipelines), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1200,800", "--enable-unsafe-swiftshader"):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path)})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        driver.get(f"http://127.0.0.1:{port}/")
        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("a person waves the right hand")
        driver.find_element(By.ID, "seconds").clear()
        driver.find_element(By.ID, "seconds").send_keys("3")
        driver.find_element(By.ID, "generate").click()
        deadline = time.monotonic() + 60
        while "done" not in driver.find_element(By.ID, "status-text").text:
            assert time.monotonic() < deadline, driver.find_element(By.ID, "status-text").text
            assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(
                By.ID, "error"
            ).text
            time.sleep(0.1)
        canvas = driver.find_element(By.CSS_SELECTOR, "#viewer canvas")
        first = canvas.screenshot_as_png
        time.sleep(0.6)
        second = canvas.screenshot_as_png
        assert first != second  # the skeletons move
        driver.find_element(By.ID, "download-0-bvh").click()
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob("*.bvh")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (downloaded,) = list(tmp_path.glob("*.bvh"))
        assert read_bvh(downloaded).num_frames == 60
        # an empty prompt is refused with a readable message in the page
        driver.find_element(By.ID, "prompt").clear()
        driver.find_element(By.ID, "prompt").send_keys("   ")
        driver.find_element(By.ID, "generate").click()
        deadline = time.monotonic() + 10
        while not driver.find_element(By.ID, "error").is_displayed() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "text is empty" in driver.find_element(By.ID, "error").text
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)
