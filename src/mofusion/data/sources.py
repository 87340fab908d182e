"""Finding motion clips on disk: Bandai-Namco archives, or any folder of BVH files.

Archives are unpacked once into the cache (never next to the data or into the repository), into a
folder named after the archive's hash, via a temporary folder that is renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..paths import cache_dir, file_digest

BANDAI_ARCHIVES = ("dataset-1.tar.xz", "dataset-2.tar.xz")


@dataclass(frozen=True)
class ClipSource:
    """One motion file and what is known about it."""

    path: Path
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceList:
    clips: list[ClipSource]
    digests: list[str]  # content hashes of everything the clips were read from
    kind: str  # "bandai-namco" or "bvh-folder"


def discover(
    path: str | Path, subsets: list[str] | None = None, cache: str | Path | None = None
) -> SourceList:
    """List the clips under ``path``.

    ``path`` may be the Bandai-Namco folder holding ``dataset-1.tar.xz``/``dataset-2.tar.xz`` (only
    ``subsets`` of them, e.g. ``["dataset-2"]``, when given), an unpacked copy of it, or any folder
    of ``.bvh`` files (searched recursively).
    """
    root = Path(path)
    if not root.exists():
        raise InputError(root, "no such file or folder")
    if not root.is_dir():
        raise InputError(root, "expected a folder of BVH files or the Bandai-Namco folder")
    archives = [root / a for a in BANDAI_ARCHIVES if (root / a).is_file()]
    if archives:
        wanted = [a for a in archives if not subsets or a.name.split(".")[0] in subsets]
        if subsets and not wanted:
            raise InputError(root, f"no archive for subsets {subsets}; found {[a.name for a in archives]}")
        clips: list[ClipSource] = []
        digests = []
        for archive in wanted:
            digest = file_digest(archive)
            folder = unpack_archive(archive, digest, cache)
            clips.extend(_bvh_folder_clips(folder, subset=archive.name.split(".")[0]))
            digests.append(f"{archive.name}:{digest}")
        return SourceList(_checked(root, clips), digests, "bandai-namco")
    clips = _checked(root, _bvh_folder_clips(root))
    if subsets:
        clips = [c for c in clips if c.labels.get("subset") in subsets]
        if not clips:
            raise InputError(root, f"no .bvh file of subsets {subsets} (their names start 'dataset-N_')")
    digests = [f"{c.name}:{file_digest(c.path)}" for c in clips]
    for c in clips:
        label_file = c.path.with_suffix(".json")
        if label_file.is_file():
            digests.append(f"{c.name}.json:{file_digest(label_file)}")
    kind = "bandai-namco" if all("content" in c.labels for c in clips) else "bvh-folder"
    return SourceList(clips, digests, kind)


def _checked(root: Path, clips: list[ClipSource]) -> list[ClipSource]:
    if not clips:
        raise InputError(root, "no .bvh files found (searched recursively)")
    return sorted(clips, key=lambda c: c.name)


def unpack_archive(archive: Path, digest: str, cache: str | Path | None = None) -> Path:
    """Unpack ``archive`` into ``<cache>/archives/<stem>-<digest[:12]>`` once; return that folder."""
    target = cache_dir(cache) / "archives" / f"{archive.name.split('.')[0]}-{digest[:12]}"
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (tmp / ".complete").write_text(digest + "\n")
        if target.exists():  # an interrupted or concurrent unpack left one behind
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(archive, f"cannot unpack the archive ({exc})") from None
    return target


def _read_label_list(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            names.append(line.split("_", 1)[1] if line.startswith("dataset-") and "_" in line else line)
    return names


def _bvh_folder_clips(root: Path, subset: str | None = None) -> list[ClipSource]:
    clips = []
    label_lists: dict[Path, tuple[list[str] | None, list[str] | None]] = {}
    for bvh in sorted(root.rglob("*")):
        if bvh.suffix.lower() != ".bvh" or not bvh.is_file() or bvh.name.startswith("."):
            continue
        labels: dict[str, str] = {}
        clip_subset = subset
        if clip_subset is None and bvh.name.startswith("dataset-"):
            clip_subset = bvh.name.split("_", 1)[0]
        if clip_subset:
            labels["subset"] = clip_subset
        sidecar = bvh.with_suffix(".json")
        if sidecar.is_file():
            labels.update(_labels_from_json(sidecar, label_lists))
        clips.append(ClipSource(bvh, bvh.relative_to(root).with_suffix("").as_posix(), labels))
    return clips


def _labels_from_json(
    sidecar: Path, cache: dict[Path, tuple[list[str] | None, list[str] | None]]
) -> dict[str, str]:
    """Labels from a sidecar: Bandai-Namco's ``{"content": i, "style": j}`` (indices into
    ``cfg/content_label.txt`` and ``cfg/style_label.txt`` one level up), or any flat string map."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(sidecar, f"invalid label file ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(sidecar, "a label file must hold a JSON object")
    cfg = sidecar.parent.parent / "cfg"
    if cfg not in cache:
        cache[cfg] = (_read_label_list(cfg / "content_label.txt"), _read_label_list(cfg / "style_label.txt"))
    contents, styles = cache[cfg]
    labels = {}
    for key, value in data.items():
        names = {"content": contents, "style": styles}.get(key)
        if names is not None and isinstance(value, int):
            if not 0 <= value < len(names):
                raise InputError(sidecar, f"{key} index {value} is outside the {len(names)} labels")
            labels[key] = names[value]
        elif isinstance(value, str | int | float):
            labels[key] = str(value)
    return labels
