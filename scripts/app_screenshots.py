"""Screenshots of the browser app in headless Chromium: after a text generation, during an
in-betweening edit (kept ranges on the timeline), and a dance playing to a song.

Usage: python scripts/app_screenshots.py [OUT_DIR] [--music-checkpoint RUN --song PATH]
(needs Debian's chromium and chromium-driver). Without a music model the last screenshot shows the
page's answer that none is loaded.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
import wave
from pathlib import Path

import numpy as np
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from mofusion.app.server import create_app, load_pipelines


def main(out: Path, music_checkpoint: Path | None = None, song: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pipelines = load_pipelines(None, "cpu")
    if music_checkpoint is not None:
        from mofusion.pipeline import MotionPipeline

        pipelines["music"] = MotionPipeline.from_checkpoint(music_checkpoint, "cpu")
    server = uvicorn.Server(uvicorn.Config(create_app(pipelines), port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1400,860", "--enable-unsafe-swiftshader"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "chromedriver"), options=options
    )
    find = lambda i: driver.find_element(By.ID, i)  # noqa: E731

    def wait_done(kind: str = "") -> None:
        while f"{kind} done" not in find("status-text").text and not find("error").is_displayed():
            time.sleep(0.1)

    try:
        driver.get(f"http://127.0.0.1:{port}/")
        time.sleep(1)
        find("prompt").clear()
        find("prompt").send_keys("a person waves the right hand")
        find("samples").clear()
        find("samples").send_keys("3")
        find("generate").click()
        wait_done()
        time.sleep(1.2)
        driver.save_screenshot(str(out / "app-generate.png"))
        # in-betweening: keep the first and last second of the first motion, remake the middle
        find("keep").send_keys("0-19,100-119")
        driver.execute_script("document.getElementById('keep').dispatchEvent(new Event('input'))")
        find("edit-text").send_keys("a person jumps")
        find("edit").click()
        time.sleep(0.5)
        driver.save_screenshot(str(out / "app-edit-running.png"))
        wait_done()
        find("play").click()  # pause on a kept frame to show its colour
        driver.execute_script(
            "const t = document.getElementById('timeline'); t.value = 10; t.dispatchEvent(new Event('input'))"
        )
        time.sleep(0.5)
        driver.save_screenshot(str(out / "app-edit-done.png"))
        # music to dance: a song uploaded, danced, and played in step with the dance
        if song is None:
            song = out / "tone.wav"
            with wave.open(str(song), "wb") as w:  # 2 s of a 440 Hz tone
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
                t = np.arange(32000) / 16000
                w.writeframes((8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes())
        find("music").send_keys(str(song.resolve()))
        find("seconds").clear()
        find("seconds").send_keys("20")
        driver.execute_script("document.getElementById('dance').scrollIntoView()")
        find("dance").click()
        if music_checkpoint is not None:
            wait_done("dance")
            find("play").click()
            time.sleep(4.0)
        else:
            time.sleep(0.5)
        driver.save_screenshot(str(out / "app-dance.png"))
    finally:
        driver.quit()
        server.should_exit = True
        (out / "tone.wav").unlink(missing_ok=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default="docs/app", type=Path)
    parser.add_argument("--music-checkpoint", type=Path, default=None)
    parser.add_argument("--song", type=Path, default=None)
    args = parser.parse_args()
    main(args.out, args.music_checkpoint, args.song)
