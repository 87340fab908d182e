"""Loss curves of training runs, from their ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ._io import atomic_path  # noqa: E402
from .errors import InputError  # noqa: E402


def read_metrics(run: str | Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl" if Path(run).is_dir() else Path(run)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the training log ({exc})") from None


def plot_curves(runs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Training and validation noise loss (and the weighted kinematic part) against the step."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for i, run in enumerate(runs):
        rows = read_metrics(run)
        label = labels[i] if labels else Path(run).name
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["eps_mse"] for r in rows], label=f"{label}: train", alpha=0.8)
        val = [(r["step"], r["val_eps_mse"]) for r in rows if "val_eps_mse" in r]
        if val:
            axes[0].plot(*zip(*val, strict=True), "o-", ms=3, label=f"{label}: validation")
        kin = [(r["step"], r["val_kinematic"]) for r in rows if r.get("val_kinematic")]
        if kin:
            axes[1].plot(*zip(*kin, strict=True), "o-", ms=3, label=f"{label}: validation")
    axes[0].set(
        xlabel="step",
        ylabel="denoising MSE (L_eps)",
        yscale="log",
        title="noise (or clean-sample) prediction loss",
    )
    axes[1].set(
        xlabel="step", ylabel="alpha_bar_t-weighted kinematic loss", yscale="log", title="kinematic part"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return out
