"""Where mofusion keeps unpacked archives and processed features."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache root: ``override``, else ``$MOFUSION_CACHE``, else ``$XDG_CACHE_HOME/mofusion``
    (``~/.cache/mofusion``)."""
    if override is not None:
        root = Path(override)
    elif os.environ.get("MOFUSION_CACHE"):
        root = Path(os.environ["MOFUSION_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mofusion"
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_digest(path: str | Path, algorithm: str = "sha1", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()
