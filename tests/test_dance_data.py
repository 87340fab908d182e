"""The dance-with-melody loader on the real data: 43 dances in metres with their songs, a tree over
the keypoints, a split by dance with every genre in test, and clear errors for damaged folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mofusion.data.dance_melody import (
    DWM_PARENTS,
    DWM_VIRTUAL,
    dance_split,
    load_dance,
    load_dance_with_melody,
    with_virtual_joints,
    write_dance_split,
)
from mofusion.errors import InputError


@pytest.fixture(scope="module")
def dances(dance_root: Path, session_cache: Path):  # type: ignore[no-untyped-def]
    return load_dance_with_melody(dance_root, session_cache)


def test_every_dance_loads_in_metres(dances) -> None:  # type: ignore[no-untyped-def]
    assert len(dances) == 43
    genres = {g: sum(d.genre == g for d in dances) for g in ("cha-cha", "rumba", "tango", "waltz")}
    assert genres == {"cha-cha": 5, "rumba": 7, "tango": 1, "waltz": 30}
    waltz = next(d for d in dances if d.name == "DANCE_W_1")
    assert waltz.num_frames == 1430 and waltz.fps == 25.0 and waltz.audio.is_file()
    thigh = np.linalg.norm(waltz.positions[:, 7] - waltz.positions[:, 8], axis=-1)
    shin = np.linalg.norm(waltz.positions[:, 8] - waltz.positions[:, 9], axis=-1)
    assert thigh.mean() == pytest.approx(0.47, abs=0.02) and shin.mean() == pytest.approx(0.32, abs=0.02)


def test_the_keypoint_tree() -> None:
    for joint in range(len(DWM_PARENTS)):
        seen, k = set(), joint
        while DWM_PARENTS[k] != -1:
            assert k not in seen
            seen.add(k)
            k = DWM_PARENTS[k]
        assert k == 2  # every joint hangs from the pelvis
    points = np.random.default_rng(0).normal(size=(4, 23, 3))
    full = with_virtual_joints(points)
    for index, (a, b) in DWM_VIRTUAL:
        assert np.allclose(full[:, index], (points[:, a] + points[:, b]) / 2)


def test_split_by_dance_with_every_genre_in_test(dances, session_cache: Path) -> None:  # type: ignore[no-untyped-def]
    split = dance_split(dances)
    assert sorted(split["train"] + split["test"]) == sorted(d.name for d in dances)
    assert not set(split["train"]) & set(split["test"])
    genre = {d.name: d.genre for d in dances}
    assert {genre[n] for n in split["test"]} == {"cha-cha", "rumba", "tango", "waltz"}
    assert len(split["test"]) == 9 and split == dance_split(dances)
    written = json.loads(write_dance_split(dances, session_cache).read_text())
    assert written["test"] == split["test"]


def test_damaged_folders_are_named(dance_root: Path, session_cache: Path, tmp_path: Path) -> None:
    from mofusion.data.dance_melody import find_dance_folder

    source = find_dance_folder(dance_root, session_cache) / "DANCE_C_2"
    broken = tmp_path / "DANCE_C_2"
    shutil.copytree(source, broken)
    (broken / "skeletons.json").write_text('{"length": 3, "skeletons": [[1, 2]]')
    with pytest.raises(InputError, match="skeletons.json: not readable JSON"):
        load_dance(broken)
    (broken / "skeletons.json").write_text(
        json.dumps({"skeletons": [[[0, 0, 0]] * 22], "center": [[0, 0, 0]]})
    )
    with pytest.raises(InputError, match="expected"):
        load_dance(broken)
    with pytest.raises(InputError, match="no such file"):
        load_dance_with_melody(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither DANCE_"):
        load_dance_with_melody(tmp_path / "empty")
