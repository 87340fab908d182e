"""The text-to-motion evaluation table: real motions, baselines and models, measured in one run.

Every test clip gives one item: its motion (at most ``max_frames`` frames, centre crop) and a caption
with held-out wording for its label (a new draw in every replication). The reference statistics of
FID are the evaluator embeddings of those centre crops. Rows:

- ``real test motions`` (``real val motions`` on the validation split): a random crop of the same
  length from the same clip (Guo et al.'s "ground
  truth" row, whose FID is small but not zero for clips longer than the crop);
- ``random training clip``: a random training clip (cropped to the item's length);
- ``same-label training clip``: the training clip of the item's label (content and style) closest
  in length, else one of the same content;
- a model row per checkpoint / sampler / guidance scale: a motion generated from the caption at the
  item's length.

Each replication redraws captions, crops, generation seeds, pools and pairs; the table gives the
mean and 95 % interval over replications.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .captions import caption_label, captions_for, has_captions
from .config import DataConfig
from .data.dataset import ClipCollection, load_dataset
from .encoders import embed_texts, load_text_encoder
from .errors import MofusionError
from .evaluator import TextMotionEvaluator, check_spec, load_evaluator
from .metrics.text import diversity, fid, make_pools, mean_ci, mm_dist, multimodality, r_precision
from .pipeline import MotionPipeline

POOL_SIZE = 32
DIVERSITY_TIMES = 300
MM_TEXTS = 16
MM_GENERATIONS = 10
MM_TIMES = 10


@dataclass
class ModelRow:
    """A model to evaluate, with the sampler settings of its row."""

    name: str
    pipe: MotionPipeline
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None


@dataclass
class Items:
    clips: list[int]
    labels: list[str]
    lengths: np.ndarray
    captions: list[list[str]]  # held-out-wording captions per item
    real: list[np.ndarray] = field(default_factory=list)  # centre crops (data units)


def _items(part: ClipCollection, max_frames: int, split_phrasing: str, pool_size: int) -> Items:
    clips, labels, lengths, captions, real = [], [], [], [], []
    for i, label in enumerate(part.labels):
        if not has_captions(label):
            continue
        n = int(part.lengths[i])
        length = min(n, max_frames)
        start = (n - length) // 2
        clips.append(i)
        labels.append(caption_label(label))
        lengths.append(length)
        captions.append(captions_for(label, split_phrasing))  # type: ignore[arg-type]
        real.append(part.clip(i)[start : start + length])
    if len(clips) < pool_size:
        raise MofusionError(f"the split has {len(clips)} captioned clips; R-Precision needs {pool_size}")
    return Items(clips, labels, np.array(lengths), captions, real)


def _random_crop(clip: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    length = min(length, len(clip))
    start = int(rng.integers(0, len(clip) - length + 1))
    return clip[start : start + length]


def _same_label_clips(items: Items, train: ClipCollection) -> tuple[list[int], int]:
    """Per item, the training clip of its label nearest in length (else of its content)."""
    train_labels = [caption_label(lab) for lab in train.labels]
    contents = [lab.get("content", "") for lab in train.labels]
    chosen, fallbacks = [], 0
    for label, length in zip(items.labels, items.lengths, strict=True):
        pool = [j for j, lab in enumerate(train_labels) if lab == label]
        if not pool:
            fallbacks += 1
            content = label.split("/")[0]
            pool = [j for j, c in enumerate(contents) if c == content] or list(range(train.num_clips))
        chosen.append(min(pool, key=lambda j: (abs(int(train.lengths[j]) - int(length)), j)))
    return chosen, fallbacks


def _generate(
    row: ModelRow,
    texts: list[str],
    lengths: np.ndarray,
    seed: int,
    batch_size: int,
) -> list[np.ndarray]:
    """One motion per text at its length; texts grouped by the U-Net's padded length."""
    pipe = row.pipe
    tokens, mask = pipe.text_condition(texts)
    multiple = pipe.model.length_multiple
    padded = np.ceil(lengths / multiple).astype(int) * multiple
    out: list[np.ndarray | None] = [None] * len(texts)
    for g, frames in enumerate(sorted(set(padded.tolist()))):
        index = np.flatnonzero(padded == frames)
        result = pipe.generate(
            len(index),
            int(frames),
            seed=seed * 1000 + g,
            sampler=row.sampler,
            steps=row.steps,
            guidance_scale=row.guidance,
            cond=tokens[index],
            cond_mask=mask[index],
            batch_size=batch_size,
        )
        for k, i in enumerate(index):
            out[i] = result.features[k, : lengths[i]].numpy()
    return out  # type: ignore[return-value]


def _scores(
    evaluator: TextMotionEvaluator,
    text_emb: np.ndarray,
    motions: list[np.ndarray],
    reference: np.ndarray,
    pools: list[np.ndarray],
    rng: np.random.Generator,
) -> dict[str, float]:
    emb = evaluator.embed_motions(motions).numpy().astype(np.float64)
    top = r_precision(text_emb, emb, pools)
    return {
        "r_precision_top1": top[0],
        "r_precision_top2": top[1],
        "r_precision_top3": top[2],
        "fid": fid(reference, emb),
        "mm_dist": mm_dist(text_emb, emb),
        "diversity": diversity(emb, DIVERSITY_TIMES, rng),
    }


def text_table(
    models: list[ModelRow],
    data: str | None = None,
    evaluator_path: str | Path | None = None,
    replications: int = 10,
    split: str = "test",
    max_frames: int = 120,
    seed: int = 0,
    cache: str | Path | None = None,
    batch_size: int = 128,
    multimodality_rows: bool = True,
    pool_size: int = POOL_SIZE,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every row ``replications`` times; returns ``{"rows": [...], "setup": {...}}``."""
    if replications < 2:
        raise MofusionError("--replications must be at least 2 (the table gives 95 % intervals)")
    evaluator = load_evaluator(evaluator_path)
    first = models[0].pipe if models else None
    data_cfg = first.config.data if first is not None else DataConfig()
    if data:
        data_cfg = DataConfig(**{**data_cfg.__dict__, "path": str(data)})
    if not data_cfg.path:
        raise MofusionError("no data: pass --data PATH")
    dataset = load_dataset(data_cfg, cache, first.normalizer.cpu() if first else None, progress=False)
    check_spec(evaluator, dataset.spec, str(data_cfg.path))
    for row in models:
        if not row.pipe.is_text_model:
            raise MofusionError(f"{row.name}: not a text model (condition.kind is none)")
        if not row.pipe.spec.same_as(dataset.spec):
            raise MofusionError(f"{row.name}: its skeleton or features differ from the data's")
    test, train = dataset.subset(split), dataset.subset("train")
    phrasing = "test" if split == "test" else "train"
    items = _items(test, max_frames, phrasing, pool_size)
    same_label, fallbacks = _same_label_clips(items, train)
    all_captions = sorted({c for cs in items.captions for c in cs})
    table = embed_texts(load_text_encoder(evaluator.config.text_encoder), all_captions, cache)
    caption_index = table.index()
    with torch.no_grad():
        caption_emb = evaluator.embed_text(table.pooled).numpy().astype(np.float64)
    reference = evaluator.embed_motions(items.real).numpy().astype(np.float64)

    names = [f"real {split} motions", "random training clip", "same-label training clip"]
    names += [m.name for m in models]
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    total = replications * (1 + len(models))
    bar = tqdm(total=total, desc="evaluating", disable=not progress)
    for r in range(replications):
        rng = np.random.default_rng([seed, r])
        texts = [cs[int(rng.integers(len(cs)))] for cs in items.captions]
        text_emb = caption_emb[[caption_index[t] for t in texts]]
        pools = make_pools(items.labels, pool_size, rng)
        real = [
            _random_crop(test.clip(c), int(n), rng) for c, n in zip(items.clips, items.lengths, strict=True)
        ]
        random_clips = rng.integers(0, train.num_clips, len(items.clips))
        rand = [
            _random_crop(train.clip(int(j)), int(n), rng)
            for j, n in zip(random_clips, items.lengths, strict=True)
        ]
        same = [
            _random_crop(train.clip(j), int(n), rng) for j, n in zip(same_label, items.lengths, strict=True)
        ]
        for name, motions in zip(names[:3], (real, rand, same), strict=True):
            results[name].append(_scores(evaluator, text_emb, motions, reference, pools, rng))
        bar.update(1)
        mm_items = rng.choice(len(items.clips), min(MM_TEXTS, len(items.clips)), replace=False)
        for row in models:
            generated = _generate(row, texts, items.lengths, seed * 100 + r, batch_size)
            scores = _scores(evaluator, text_emb, generated, reference, pools, rng)
            if multimodality_rows:
                mm_texts = [texts[i] for i in mm_items for _ in range(MM_GENERATIONS)]
                mm_lengths = np.repeat(items.lengths[mm_items], MM_GENERATIONS)
                mm_motions = _generate(row, mm_texts, mm_lengths, seed * 100 + r + 50_000, batch_size)
                emb = evaluator.embed_motions(mm_motions).numpy().reshape(len(mm_items), MM_GENERATIONS, -1)
                scores["multimodality"] = multimodality(emb.astype(np.float64), MM_TIMES, rng)
            results[row.name].append(scores)
            bar.update(1)
    bar.close()
    rows = []
    for name in names:
        row_out: dict[str, Any] = {"name": name}
        for key in results[name][0]:
            mean, ci = mean_ci([s[key] for s in results[name]])
            row_out[key] = mean
            row_out[key + "_ci95"] = ci
        row_out["replicates"] = {key: [s[key] for s in results[name]] for key in results[name][0]}
        rows.append(row_out)
    setup = {
        "split": split,
        "items": len(items.clips),
        "labels": len(set(items.labels)),
        "replications": replications,
        "pool_size": pool_size,
        "max_frames": max_frames,
        "same_label_fallbacks": fallbacks,
        "caption_wording": "held out of training" if phrasing == "test" else "training phrasings",
        "multimodality": f"{MM_TEXTS} texts x {MM_GENERATIONS} generations, {MM_TIMES} pairs",
        "diversity_pairs": DIVERSITY_TIMES,
    }
    return {"rows": rows, "setup": setup}


_COLUMNS = (
    ("r_precision_top1", "R@1", 3),
    ("r_precision_top2", "R@2", 3),
    ("r_precision_top3", "R@3", 3),
    ("fid", "FID", 4),
    ("mm_dist", "MM-Dist", 3),
    ("diversity", "Diversity", 3),
    ("multimodality", "MModality", 3),
)


def format_text_table(table: dict[str, Any]) -> str:
    rows = table["rows"]
    width = max(len(r["name"]) for r in rows) + 2
    head = f"{'':{width}}" + "".join(f"{title:>17}" for _, title, _ in _COLUMNS)
    lines = [head]
    for r in rows:
        cells = []
        for key, _, digits in _COLUMNS:
            if key in r:
                cells.append(f"{r[key]:.{digits}f}±{r[key + '_ci95']:.{digits}f}".rjust(17))
            else:
                cells.append(f"{'-':>17}")
        lines.append(f"{r['name']:{width}}" + "".join(cells))
    s = table["setup"]
    lines.append(
        f"{s['items']} {s['split']} clips ({s['labels']} labels), captions {s['caption_wording']}; "
        f"{s['replications']} replications, mean ± 95 % interval; pools of {s['pool_size']}"
    )
    return "\n".join(lines)


def label_prototypes(
    evaluator: TextMotionEvaluator, labels: list[str], cache: str | Path | None = None
) -> np.ndarray:
    """One unit vector per ``content/style`` label: the mean evaluator embedding of its training captions."""
    per_label = []
    for label in labels:
        content, style = label.split("/")
        per_label.append(captions_for({"content": content, "style": style}, "train"))
    # every label's captions encoded in one pass (one cache entry), then averaged per label
    texts = [t for captions in per_label for t in captions]
    pooled = embed_texts(load_text_encoder(evaluator.config.text_encoder), texts, cache).pooled
    with torch.no_grad():
        emb = evaluator.embed_text(pooled)
    bounds = np.cumsum([0] + [len(c) for c in per_label])
    means = torch.stack([emb[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    return torch.nn.functional.normalize(means, dim=1).numpy()


def prompt_table(
    pipe: MotionPipeline,
    prompts: list[str],
    data: str | None = None,
    evaluator_path: str | Path | None = None,
    samples: int = 4,
    seconds: float = 6.0,
    seed: int = 0,
    cache: str | Path | None = None,
) -> list[dict[str, Any]]:
    """For each prompt, the evaluator's nearest label (among the data's labels) for each of
    ``samples`` generations."""
    evaluator = load_evaluator(evaluator_path)
    data_cfg = pipe.config.data
    if data:
        data_cfg = DataConfig(**{**data_cfg.__dict__, "path": str(data)})
    dataset = load_dataset(data_cfg, cache, pipe.normalizer.cpu(), progress=False)
    labels = sorted({caption_label(lab) for lab in dataset.collection.labels if has_captions(lab)})
    prototypes = label_prototypes(evaluator, labels, cache)
    rows = []
    for k, prompt in enumerate(prompts):
        tokens, mask = pipe.text_condition([prompt], repeat=samples)
        result = pipe.generate(samples, pipe.frames_for(seconds), seed=seed + k, cond=tokens, cond_mask=mask)
        emb = evaluator.embed_motions(list(result.features.numpy())).numpy()
        nearest = [labels[i] for i in (emb @ prototypes.T).argmax(1)]
        rows.append({"prompt": prompt, "top1_labels": nearest})
    return rows
