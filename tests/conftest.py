"""Shared fixtures: the real data under ../shared/data (tests skip with a reason when it is absent),
a session cache for unpacked archives and processed features, and small real-data sets."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOFUSION_SHARED_DATA", REPO.parent / "shared" / "data"))
BANDAI = SHARED_DATA / "bandai-namco"
HUMANML3D = SHARED_DATA / "humanml3d-sample"


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set MOFUSION_SHARED_DATA or place ../shared/data)")
    return path


def signal_when_ready(process: subprocess.Popen[str], ready: Callable[[], bool], signum: int) -> str:
    """Wait (up to 120 s, the process still running) until ``ready()``, send ``signum``, and return
    the process's stderr once it has ended; it is killed if anything fails on the way."""
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert process.poll() is None, f"the process ended early: {process.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "the process did not get ready in 120 s"
            time.sleep(0.1)
        process.send_signal(signum)
        return process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mofusion-cache")


@pytest.fixture(scope="session")
def bandai_root() -> Path:
    return _require(BANDAI / "dataset-1.tar.xz").parent


@pytest.fixture(scope="session")
def humanml3d_dir() -> Path:
    return _require(HUMANML3D / "new_joint_vecs" / "012314.npy").parents[1]


@pytest.fixture(scope="session")
def bandai_clips(bandai_root: Path, session_cache: Path) -> list[Path]:
    """The BVH files of Bandai-Namco dataset-1, unpacked into the session cache."""
    from mofusion.data.sources import discover

    sources = discover(bandai_root, ["dataset-1"], session_cache)
    return [c.path for c in sources.clips]


@pytest.fixture(scope="session")
def bandai_dataset(bandai_root: Path, session_cache: Path):  # type: ignore[no-untyped-def]
    """dataset-1 processed at 20 fps (174 clips)."""
    from mofusion.config import DataConfig
    from mofusion.data.dataset import load_dataset

    return load_dataset(
        DataConfig(path=str(bandai_root), subsets=["dataset-1"]), session_cache, progress=False
    )


@pytest.fixture(scope="session")
def tiny_run(bandai_root: Path, session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 12 steps on dataset-1 through the CLI."""
    from mofusion.cli import main

    out = tmp_path_factory.mktemp("run") / "tiny"
    code = main(["train", "--preset", "tiny", "--data", str(bandai_root), "--subset", "dataset-1",
                 "--out", str(out), "--cache", str(session_cache), "--max-steps", "12", "-q"])  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="session")
def tiny_masked_run(bandai_root: Path, session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mask-conditioned model (12 steps on dataset-1)."""
    from mofusion.cli import main

    out = tmp_path_factory.mktemp("run") / "tiny-masked"
    code = main(["train", "--preset", "tiny", "--data", str(bandai_root), "--subset", "dataset-1",
                 "--out", str(out), "--cache", str(session_cache), "--max-steps", "12", "-q",
                 "--set", "denoiser.mask_conditioning=True"])  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="session")
def tiny_residual_run(
    bandai_root: Path, session_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny mask-conditioned model that diffuses the residual to the interpolation (12 steps)."""
    from mofusion.cli import main

    out = tmp_path_factory.mktemp("run") / "tiny-residual"
    code = main(["train", "--preset", "tiny", "--data", str(bandai_root), "--subset", "dataset-1",
                 "--out", str(out), "--cache", str(session_cache), "--max-steps", "12", "-q",
                 "--set", "denoiser.mask_conditioning=True",
                 "--set", "denoiser.interpolation_residual=True"])  # fmt: skip
    assert code == 0
    return out


DANCE_WITH_MELODY = SHARED_DATA / "dance-with-melody"


@pytest.fixture(scope="session")
def dance_root() -> Path:
    return _require(DANCE_WITH_MELODY)


@pytest.fixture(scope="session")
def small_dances(dance_root: Path, session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real dances (cha-cha to test, one waltz to train, one to test): a data set in seconds."""
    from mofusion.data.dance_melody import find_dance_folder

    source = find_dance_folder(dance_root, session_cache)
    folder = tmp_path_factory.mktemp("dances")
    for name in ("DANCE_C_2", "DANCE_W_1", "DANCE_W_3"):
        (folder / name).symlink_to(source / name)
    return folder


@pytest.fixture(scope="session")
def tiny_music_model(
    small_dances: Path, session_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from mofusion.cli import main

    out = tmp_path_factory.mktemp("run") / "tiny-music"
    code = main(["train", "--preset", "tiny", "--data", str(small_dances), "--out", str(out),
                 "--cache", str(session_cache), "--max-steps", "6", "-q",
                 "--set", "condition.kind=music", "--set", "data.fps=25.0"])  # fmt: skip
    assert code == 0
    return out
