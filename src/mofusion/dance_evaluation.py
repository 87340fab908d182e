"""``mofusion evaluate dance``: the field's dance metrics on the held-out songs, with real and
baseline rows measured in the same run.

Protocol. Every test dance's song stretch is danced in full by each model (window after window,
:func:`mofusion.dance.generate_dance`); real and generated dances are cut into the same
non-overlapping segments (10 s by default) and each segment gets:

- Beat Align Score against the song's beats inside that segment (:mod:`mofusion.metrics.dance`);
- FACT's kinetic and geometric features, standardised by the real test segments' mean and
  deviation as Bailando does; FID_k / FID_g are Fréchet distances to the real test segments, Div_k /
  Div_g the mean pairwise distance within a row;
- the foot-skating ratio (the feature spec's foot joints, e.g. toes and heels, at the planted height
  measured on the real dances).

Where a test genre has no training dance (dance-with-melody's only tango), Div_k / Div_g are also
given on the segments of the other genres, with the same standardisation: the variety a model can
learn from its training dances.

Rows: the real test dances (the reference: FID 0 by definition), every model given, and a baseline
of real *training* segments, drawn at random and played to the test music (a dance that is real
but not made for this song: what BAS must beat, and the FID a model should approach).

``split="train"`` runs the same protocol on every other training dance, the baseline drawn from the
remaining training dances: the split has no validation dances (each genre has too few), so this is
where sampling settings (temperature, guidance) are chosen without looking at the test songs. The
model has seen those dances: its figures there are a proxy for choosing, never for reporting.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import read_audio
from .config import DataConfig
from .dance import generate_dance, seam_jump, song_frames
from .data.dataset import build_music_collection
from .errors import MofusionError
from .metrics.dance import (
    REFERENCE_FPS,
    GeometricSkeleton,
    average_distance,
    beat_align_score,
    geometric_features,
    kinetic_features,
    motion_beats,
    music_beats,
    normalise_by,
)
from .metrics.kinematic import foot_skating_ratio, mean_ci, planted_toe_height
from .metrics.text import fid
from .motion import fit_length
from .pipeline import MotionPipeline
from .representation import MotionRepresentation


def _segments(length: int, size: int) -> list[int]:
    return list(range(0, length - size + 1, size))


def _row(
    name: str,
    segments: list[np.ndarray],
    beats: list[np.ndarray],
    fps: float,
    body: GeometricSkeleton,
    feet: list[int],
    ground: float,
) -> dict[str, Any]:
    """Per-segment measures of one row (features are compared across rows afterwards)."""
    kinetic = np.stack([kinetic_features(s, fps) for s in segments])
    geometric = np.stack([geometric_features(s, fps, body) for s in segments])
    bas = np.array([beat_align_score(b, motion_beats(s, fps)) for s, b in zip(segments, beats, strict=True)])
    skating = foot_skating_ratio(np.stack(segments), feet, fps, ground=ground)
    return {"name": name, "kinetic": kinetic, "geometric": geometric, "bas": bas, "skating": skating}


def dance_table(
    checkpoints: Sequence[Path],
    data: str,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    segment_seconds: float = 10.0,
    steps: int | None = None,
    overlap: int | None = None,
    guidance: float | None = None,
    device: str = "auto",
    cache: str | Path | None = None,
    max_dances: int | None = None,
    progress: bool = True,
    split_name: str = "test",
    temperature: float | None = None,
    acceleration: str = "auto",
) -> dict[str, Any]:
    """The metric table (see the module docstring) as a JSON-ready dict. ``acceleration`` is the
    pipelines' (:meth:`mofusion.fast.Acceleration.parse`): the quality of a speed-up, bf16 say, is
    measured by the same protocol as the model's."""
    if not checkpoints:
        raise MofusionError("give at least one --checkpoint")
    if split_name not in ("test", "train"):
        raise MofusionError(f"the split must be test or train, got {split_name!r}")
    pipes = [MotionPipeline.from_checkpoint(c, device, acceleration) for c in checkpoints]
    for path, pipe in zip(checkpoints, pipes, strict=True):
        if pipe.config.condition.kind != "music":
            raise MofusionError(f"{path}: not a music model")
        if temperature is not None:
            pipe.config.sample.temperature = temperature
    fps = pipes[0].fps
    if any(abs(p.fps - fps) > 1e-9 for p in pipes):
        raise MofusionError("the models work at different frame rates")
    data_cfg = DataConfig(path=data, fps=fps, window=pipes[0].config.data.window)
    collection, split, _ = build_music_collection(data_cfg, None, cache, progress)
    representation = MotionRepresentation(collection.spec)
    index = {n: i for i, n in enumerate(collection.names)}
    test = [n for n in split["test"] if n in index]
    train = [n for n in split["train"] if n in index]
    if split_name == "train":  # every other training dance is danced, the rest give the baseline
        test, train = train[::2], train[1::2]
    test = test[:max_dances]
    if not test or not train:
        what = "two training dances" if split_name == "train" else "test and training dances"
        raise MofusionError(f"{data}: the split needs {what}")

    def positions_of(name: str) -> np.ndarray:
        features = torch.from_numpy(collection.clip(index[name])).double()
        return representation.decode_positions(features).numpy()

    real = {n: positions_of(n) for n in test}
    size = int(round(segment_seconds * fps))
    if min(len(p) for p in real.values()) < size:
        raise MofusionError(f"--segment-seconds {segment_seconds} is longer than a test dance")
    # the songs' beats (60-fps frames from the dance's first frame), inside each segment
    song_beats: dict[str, np.ndarray] = {}
    for name in test:
        label = collection.labels[index[name]]
        samples = read_audio(label["audio"], 22050)
        start = float(label["music_start_seconds"])
        beats = music_beats(samples, 22050) - start * REFERENCE_FPS
        song_beats[name] = beats
    keys = [(n, s) for n in test for s in _segments(len(real[n]), size)]
    scale = REFERENCE_FPS / fps

    def beats_in(name: str, start: int) -> np.ndarray:
        b = song_beats[name] - start * scale
        return b[(b >= 0) & (b < size * scale)]

    beats = [beats_in(n, s) for n, s in keys]
    body = GeometricSkeleton.of(collection.spec.skeleton)
    feet = collection.spec.skeleton.indices(collection.spec.left_foot + collection.spec.right_foot)
    ground = planted_toe_height(np.stack([real[n][s : s + size] for n, s in keys]), feet)
    real_name = "real test dances" if split_name == "test" else "real training dances (evaluated half)"
    rows = [_row(real_name, [real[n][s : s + size] for n, s in keys], beats, fps, body, feet, ground)]
    seams: dict[str, dict[str, float]] = {}
    for i, (path, pipe) in enumerate(zip(checkpoints, pipes, strict=True)):
        name = labels[i] if labels else Path(path).name
        songs = []
        for dance in test:
            label = collection.labels[index[dance]]
            frames = song_frames(pipe, label["audio"], float(label["music_start_seconds"]), None, cache)
            songs.append(fit_length(frames, len(real[dance])))  # a song may end a little before its dance
        results = generate_dance(
            pipe, songs, seed=seed, steps=steps, overlap=overlap, guidance_scale=guidance, progress=progress
        )
        generated = {d: r.positions.numpy() for d, r in zip(test, results, strict=True)}
        jumps = [seam_jump(r.positions.numpy(), r.seams) for r in results]
        ratio = np.array([a / b for a, b in jumps if np.isfinite(a)])
        seams[name] = {"seam_jump_over_mean_change": float(ratio.mean()), "dances": len(ratio)}
        segments = [generated[n][s : s + size] for n, s in keys]
        rows.append(_row(name, segments, beats, fps, body, feet, ground))
    # baseline: random real training segments under the test music
    rng = np.random.default_rng(seed)
    pool = [(n, s) for n in train for s in _segments(int(collection.lengths[index[n]]), size)]
    picks = rng.choice(len(pool), len(keys), replace=len(pool) < len(keys))
    train_positions = {n: positions_of(n) for n in {pool[p][0] for p in picks}}
    baseline = [train_positions[pool[p][0]][pool[p][1] : pool[p][1] + size] for p in picks]
    baseline_name = "real training segments, test music"
    if split_name == "train":
        baseline_name = "other training dances' segments, this music"
    rows.append(_row(baseline_name, baseline, beats, fps, body, feet, ground))

    # a genre with no training dance (the data set's only tango) cannot be learnt: Div on the other
    # genres' segments says how much of a gap to the real Div is variety the training data never had
    genre_of = {n: str(collection.labels[index[n]].get("genre", "?")) for n in (*test, *train)}
    seen_genres = {genre_of[n] for n in train}
    seen = np.array([genre_of[n] in seen_genres for n, _ in keys])
    split_by_genre = 2 <= int(seen.sum()) < len(keys)
    table_rows = []
    reference = rows[0]
    # a feature that never varies over the reference (a pose test no real segment passes) cannot be
    # standardised: Bailando's (x - mean) / (std + 1e-10) would blow any other row's value up by 1e10
    varies = {kind: reference[kind].std(axis=0) > 1e-8 for kind in ("kinetic", "geometric")}
    for row in rows:
        ref_k, k = normalise_by(
            reference["kinetic"][:, varies["kinetic"]], row["kinetic"][:, varies["kinetic"]]
        )
        ref_g, g = normalise_by(
            reference["geometric"][:, varies["geometric"]], row["geometric"][:, varies["geometric"]]
        )
        bas, bas_ci = mean_ci(row["bas"])
        skating, skating_ci = mean_ci(row["skating"])
        with warnings.catch_warnings():  # more dimensions than segments: singular covariances
            warnings.simplefilter("ignore")
            fid_k = 0.0 if row is reference else fid(k, ref_k)
            fid_g = 0.0 if row is reference else fid(g, ref_g)
        entry = {
            "name": row["name"],
            "segments": len(row["bas"]),
            "fid_k": fid_k,
            "fid_g": fid_g,
            "div_k": average_distance(k),
            "div_g": average_distance(g),
            "bas": bas,
            "bas_ci95": bas_ci,
            "skating": skating,
            "skating_ci95": skating_ci,
        }
        if split_by_genre:
            entry["div_k_seen_genres"] = average_distance(k[seen])
            entry["div_g_seen_genres"] = average_distance(g[seen])
        entry.update(seams.get(row["name"], {}))
        table_rows.append(entry)
    return {
        "protocol": {
            "split": split_name,
            "test_dances": test,
            "segment_seconds": segment_seconds,
            "segments": len(keys),
            "fps": fps,
            "seed": seed,
            "steps": steps,
            "temperature": pipes[0].config.sample.temperature,
            "guidance": guidance,
            "acceleration": str(pipes[0].acceleration),
            "overlap": overlap if overlap is not None else pipes[0].config.data.window // 2,
            "blend": (overlap if overlap is not None else pipes[0].config.data.window // 2) // 8,
            "planted_height_m": ground,
            "features_used": {k: f"{int(v.sum())} of {len(v)}" for k, v in varies.items()},
            "unseen_genres": sorted({genre_of[n] for n in test} - seen_genres),
            "segments_seen_genres": int(seen.sum()),
            "reference": f"real {split_name} segments (features standardised by their mean and deviation)",
        },
        "rows": table_rows,
    }


def format_dance_table(table: dict[str, Any]) -> str:
    rows = table["rows"]
    width = max(len(r["name"]) for r in rows) + 2
    header = (
        f"{'rows':<{width}}{'n':>4}{'FID_k':>9}{'FID_g':>9}{'Div_k':>8}{'Div_g':>8}"
        f"{'BAS':>17}{'skating':>17}{'seam jump':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        seam = r.get("seam_jump_over_mean_change")
        lines.append(
            f"{r['name']:<{width}}{r['segments']:>4}{r['fid_k']:>9.2f}{r['fid_g']:>9.2f}{r['div_k']:>8.2f}"
            f"{r['div_g']:>8.2f}{r['bas']:>10.4f} ± {r['bas_ci95']:<5.3f}{r['skating']:>10.3f} ± "
            f"{r['skating_ci95']:<5.3f}{'' if seam is None else f'{seam:>11.2f}'}"
        )
    p = table["protocol"]
    if "div_k_seen_genres" in rows[0]:
        divs = [f"{r['name']} {r['div_k_seen_genres']:.2f} / {r['div_g_seen_genres']:.2f}" for r in rows]
        lines.append(
            f"Div_k / Div_g on the {p['segments_seen_genres']} segments of genres with training dances "
            f"(not {', '.join(p['unseen_genres'])}): " + "; ".join(divs)
        )
    lines.append(
        f"{p['segments']} segments of {p['segment_seconds']:g} s from {len(p['test_dances'])} "
        f"{p.get('split', 'test')} dances; FID against their real segments; seam jump: velocity change at "
        "window seams / mean change"
    )
    return "\n".join(lines)
