"""Text-to-motion metrics as Guo et al. (2022, "Generating Diverse and Natural 3D Human Motions from
Text") define them, on evaluator embeddings.

- R-Precision: texts and motions are split into pools of 32 pairs; for each text the 32 motions are
  ranked by Euclidean distance, top-k counts the matching motion among the k nearest.
- MM-Dist: mean Euclidean distance between each text and its motion.
- FID: Frechet distance between Gaussians fitted to two sets of motion embeddings.
- Diversity: mean distance between ``times`` random pairs of motions (300 in the field).
- MultiModality: for each text, mean distance between ``times`` random pairs of its generations.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from .kinematic import mean_ci as mean_ci  # the tables share one mean and 95 % interval


def distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(N, M)`` between the rows of ``a`` and ``b``."""
    d2 = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :]
    return np.sqrt(np.clip(d2, 0.0, None))


def make_pools(labels: list[str], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random pools of ``size`` indices in which no label occurs twice: as many pools as the items
    allow (at most ``len(labels) // size``); items that fit no pool are left out.

    Items are grouped by label (a random order of labels and of items within them), each label keeps
    at most one item per pool, and the list is dealt to the pools in turn, so a label's items land in
    different pools."""
    groups: dict[str, list[int]] = {}
    for i in rng.permutation(len(labels)):
        groups.setdefault(labels[int(i)], []).append(int(i))
    order = [groups[k] for k in rng.permutation(sorted(groups))]
    num = len(labels) // size
    while num > 0:
        dealt = [i for group in order for i in group[:num]]
        if len(dealt) >= num * size:
            return [np.array(dealt[p::num][:size]) for p in range(num)]
        num -= 1
    return []


def r_precision(text: np.ndarray, motion: np.ndarray, pools: list[np.ndarray], top_k: int = 3) -> np.ndarray:
    """Share of texts whose own motion is among the ``k`` nearest of its pool, for k = 1..top_k."""
    hits = np.zeros(top_k)
    count = 0
    for pool in pools:
        dist = distance_matrix(text[pool], motion[pool])
        rank = (dist < np.diag(dist)[:, None]).sum(1)  # motions strictly nearer than the true one
        for k in range(top_k):
            hits[k] += (rank <= k).sum()
        count += len(pool)
    return hits / max(count, 1)


def mm_dist(text: np.ndarray, motion: np.ndarray) -> float:
    return float(np.linalg.norm(text - motion, axis=1).mean())


def gaussian(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return embeddings.mean(0), np.cov(embeddings, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017)."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian(a), *gaussian(b))


def diversity(embeddings: np.ndarray, times: int, rng: np.random.Generator) -> float:
    n = len(embeddings)
    times = min(times, n)
    first = rng.choice(n, times, replace=False)
    second = rng.choice(n, times, replace=False)
    return float(np.linalg.norm(embeddings[first] - embeddings[second], axis=1).mean())


def multimodality(embeddings: np.ndarray, times: int, rng: np.random.Generator) -> float:
    """``embeddings (texts, generations, D)``."""
    per_text = embeddings.shape[1]
    times = min(times, per_text)
    first = rng.choice(per_text, times, replace=False)
    second = rng.choice(per_text, times, replace=False)
    return float(np.linalg.norm(embeddings[:, first] - embeddings[:, second], axis=2).mean())
