"""The quality cost of each sampling speed-up, from the text evaluator (R-Precision, FID, MM-Dist,
Diversity), measured in one run with 95 % intervals over replications.

Two steps, so that the measurement can run on a machine without the data set (a GPU machine):

    python bench/sample_quality.py pack --data ../shared/data/bandai-namco --out .devcache/quality-pack.npz
    python bench/sample_quality.py run --pack .devcache/quality-pack.npz \
        --row ddpm:50:none --row ddpm:50:bf16+graph --row ddpm:20:bf16+graph ... [--device cuda]

``pack`` stores what the evaluation needs from the data: the test items of
:func:`mofusion.text_evaluation.text_table` (labels, lengths, captions with held-out wording) and
the evaluator's embeddings of the real test motions (FID's reference). ``run`` draws each
replication's captions and R-Precision pools exactly as ``mofusion evaluate text`` does (same seeds,
so the rows are comparable with bench/results/bandai-text/text-eval-test.json), generates with the
packaged model under each row's sampler and acceleration, and scores the motions. A row is
``sampler:steps:acceleration`` (acceleration as in :class:`mofusion.fast.Acceleration`), or
``sampler:steps:acceleration:spacing`` with the sampler's steps placed otherwise than evenly
(``power<p>``: ``(T - 1) u^p`` for ``u`` evenly in [0, 1], p > 1 denser at low noise; ``log-snr``:
evenly in log signal-to-noise ratio; ``karras<rho>``: Karras et al.'s noise levels; an experiment of
this bench, not a library option: the library spaces steps evenly). The
JSON keeps each replication's figures and, for every row after the first, the mean difference to
the first row per replication with its interval (the rows share texts, pools and seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

import mofusion.diffusion
from mofusion._io import atomic_path, atomic_write_json
from mofusion.checkpoint import default_checkpoint
from mofusion.config import DataConfig
from mofusion.data.dataset import load_dataset
from mofusion.encoders import load_text_encoder
from mofusion.evaluator import load_evaluator
from mofusion.metrics.text import diversity, fid, make_pools, mean_ci, mm_dist, r_precision
from mofusion.pipeline import MotionPipeline
from mofusion.text_evaluation import DIVERSITY_TIMES, POOL_SIZE, ModelRow, _generate, _items

SPACINGS = ("uniform", "power<p>", "log-snr", "karras<rho>")
EVEN_SPACING = mofusion.diffusion.spaced_timesteps


def spaced_steps(spacing: str, alpha_bar: np.ndarray, num_steps: int, last_step: int = 0) -> np.ndarray:
    """``num_steps`` descending steps from ``T - 1`` to ``last_step`` placed by ``spacing`` (one of
    :data:`SPACINGS`; ``uniform`` is the library's :func:`mofusion.diffusion.spaced_timesteps`) on
    a schedule of ``T`` steps with cumulative products ``alpha_bar``. Steps that round to the same
    one are kept once."""
    total = len(alpha_bar)
    uniform = EVEN_SPACING(total, num_steps, last_step)
    if spacing == "uniform" or num_steps < 3:
        return uniform
    u = np.linspace(0.0, 1.0, num_steps)
    index = np.arange(total)
    if spacing.startswith("power"):
        t = last_step + (total - 1 - last_step) * u ** float(spacing.removeprefix("power"))
    elif spacing == "log-snr":
        snr = 0.5 * np.log(alpha_bar / (1 - alpha_bar))  # decreasing in t
        t = np.interp(-np.linspace(snr[last_step], snr[-1], num_steps), -snr, index)
    elif spacing.startswith("karras"):
        rho = float(spacing.removeprefix("karras"))
        sigma = np.sqrt((1 - alpha_bar) / alpha_bar)  # increasing in t
        lo, hi = sigma[last_step] ** (1 / rho), sigma[-1] ** (1 / rho)
        t = np.interp((lo + u * (hi - lo)) ** rho, sigma, index)
    else:
        raise ValueError(f"unknown spacing {spacing!r} ({', '.join(SPACINGS)})")
    steps = np.round(t).astype(np.int64)
    steps[0], steps[-1] = last_step, total - 1
    return np.unique(steps)[::-1].copy()


@contextmanager
def spacing_of(spacing: str, alpha_bar: np.ndarray) -> Iterator[None]:
    """Samplers made inside place their steps by ``spacing`` (see :func:`spaced_steps`)."""

    def spaced(total: int, num_steps: int, last_step: int = 0) -> np.ndarray:
        assert total == len(alpha_bar)
        return spaced_steps(spacing, alpha_bar, num_steps, last_step)

    mofusion.diffusion.spaced_timesteps = spaced  # type: ignore[assignment]
    try:
        yield
    finally:
        mofusion.diffusion.spaced_timesteps = EVEN_SPACING


def pack(args: argparse.Namespace) -> None:
    pipe = MotionPipeline.from_checkpoint(default_checkpoint(), "cpu")
    evaluator = load_evaluator(None)
    data = DataConfig(**{**pipe.config.data.__dict__, "path": args.data})
    dataset = load_dataset(data, args.cache, pipe.normalizer.cpu(), progress=False)
    items = _items(dataset.subset(args.split), 120, "test" if args.split == "test" else "train", POOL_SIZE)
    with torch.no_grad():
        reference = evaluator.embed_motions(items.real).numpy().astype(np.float32)
    meta = {"split": args.split, "labels": items.labels, "captions": items.captions}
    with atomic_path(args.out) as tmp:  # its folder made, never half written
        np.savez(tmp, lengths=items.lengths, reference=reference, meta=np.array(json.dumps(meta)))
    print(f"{len(items.labels)} items written to {args.out}")


def run(args: argparse.Namespace) -> None:
    device = args.device
    with np.load(args.pack, allow_pickle=False) as data:
        lengths = data["lengths"]
        reference = data["reference"].astype(np.float64)
        meta = json.loads(str(data["meta"]))
    labels, captions = meta["labels"], meta["captions"]
    evaluator = load_evaluator(None)
    rows: list[tuple[str, ModelRow]] = []
    spacings: dict[str, str] = {}
    for spec in args.row:
        kind, steps, how, *spacing = spec.split(":")
        pipe = MotionPipeline.from_checkpoint(args.checkpoint or default_checkpoint(), device, how)
        if spacing:  # an unknown spacing fails here, before any replication
            spaced_steps(spacing[0], np.asarray(pipe.schedule.alpha_bar64), int(steps))
        if args.text_encoder:
            pipe.config = pipe.config.updated({"condition": {"text_encoder": args.text_encoder}})
        rows.append((spec, ModelRow(spec, pipe, kind, int(steps))))
        spacings[spec] = spacing[0] if spacing else "uniform"
    encoder_pipe = rows[0][1].pipe
    results: dict[str, list[dict[str, float]]] = {spec: [] for spec, _ in rows}
    seconds: dict[str, float] = {spec: 0.0 for spec, _ in rows}
    started = time.perf_counter()
    for r in range(args.replications):
        rng = np.random.default_rng([args.seed, r])  # the draws of text_table, in its order
        texts = [cs[int(rng.integers(len(cs)))] for cs in captions]
        pools = make_pools(labels, POOL_SIZE, rng)
        cfg = encoder_pipe.config.condition
        pooled = load_text_encoder(cfg.text_encoder, cfg.max_tokens, device).encode(texts).pooled.cpu()
        with torch.no_grad():
            text_emb = evaluator.embed_text(pooled.half().float()).numpy().astype(np.float64)
        for spec, row in rows:
            start = time.perf_counter()
            with spacing_of(spacings[spec], np.asarray(row.pipe.schedule.alpha_bar64)):
                motions = _generate(row, texts, lengths, args.seed * 100 + r, args.batch)
            seconds[spec] += time.perf_counter() - start
            with torch.no_grad():
                emb = evaluator.embed_motions(motions).numpy().astype(np.float64)
            top = r_precision(text_emb, emb, pools)
            results[spec].append(
                {
                    "r_precision_top1": top[0],
                    "r_precision_top3": top[2],
                    "fid": fid(reference, emb),
                    "mm_dist": mm_dist(text_emb, emb),
                    "diversity": diversity(emb, DIVERSITY_TIMES, np.random.default_rng([args.seed, r, 1])),
                }
            )
        print(f"replication {r + 1}/{args.replications} ({time.perf_counter() - started:.0f} s)", flush=True)
        write(args, rows, results, seconds, labels, meta, r + 1)
    out_rows = write(args, rows, results, seconds, labels, meta, args.replications)
    head = f"{'row':28}{'R@1':>15}{'R@3':>15}{'FID':>17}{'MM-Dist':>15}{'Diversity':>15}{'gen s':>8}"
    print(head)
    for row in out_rows:
        cells = "".join(
            f"{row[k]:.{d}f}±{row[k + '_ci95']:.{d}f}".rjust(w)
            for k, d, w in (("r_precision_top1", 3, 15), ("r_precision_top3", 3, 15), ("fid", 4, 17),
                            ("mm_dist", 3, 15), ("diversity", 3, 15))
        )  # fmt: skip
        print(f"{row['row']:28}{cells}{row['generation_s_total']:>8.1f}")
    for row in out_rows[1:]:
        diff = row["paired_difference_to_first_row"]
        cells = ", ".join(
            f"{k} {diff[k][0]:+.4f}±{diff[k][1]:.4f}" for k in ("r_precision_top1", "fid", "mm_dist")
        )
        print(f"{row['row']} minus {out_rows[0]['row']}, paired: {cells}")


def write(
    args: argparse.Namespace,
    rows: list[tuple[str, ModelRow]],
    results: dict[str, list[dict[str, float]]],
    seconds: dict[str, float],
    labels: list[str],
    meta: dict[str, Any],
    done: int,
) -> list[dict[str, Any]]:
    """Write the table of the replications done so far (a run cut short keeps them)."""
    out_rows = []
    first = rows[0][0]
    for spec, _ in rows:
        row_out: dict[str, Any] = {"row": spec, "generation_s_total": round(seconds[spec], 1)}
        for key in results[spec][0]:
            mean, ci = mean_ci([s[key] for s in results[spec]])
            row_out[key], row_out[key + "_ci95"] = mean, ci
        row_out["per_replication"] = {key: [s[key] for s in results[spec]] for key in results[spec][0]}
        if spec != first:
            # every row sees the same texts, pools and seeds in a replication: the difference to the
            # first row per replication cancels what they share, a tighter test than two intervals
            row_out["paired_difference_to_first_row"] = {
                key: mean_ci([s[key] - f[key] for s, f in zip(results[spec], results[first], strict=True)])
                for key in results[spec][0]
            }
        out_rows.append(row_out)
    device = args.device
    result = {
        "device": str(torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"),
        "items": len(labels),
        "split": meta["split"],
        "replications": done,
        "rows": out_rows,
    }
    atomic_write_json(args.out, result)
    return out_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", required=True)
    p.add_argument("--cache", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--pack", required=True)
    r.add_argument("--row", action="append", required=True)
    r.add_argument("--replications", type=int, default=10)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch", type=int, default=128)
    r.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    r.add_argument("--text-encoder", default=None)
    r.add_argument("--checkpoint", default=None, help="a text model (default: the packaged one)")
    r.add_argument("--out", required=True)
    args = parser.parse_args()
    pack(args) if args.command == "pack" else run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
