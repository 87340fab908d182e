"""How well a prompt of unseen wording finds its action in MiniLM's sentence space: the held-out
wording captions of every training class, matched to the training classes by several rules.

The rule behind prompt anchors (``PromptAnchors.nearest``) is a softmax classifier fitted on the
training captions' unit pooled vectors, started at and pulled towards the class means
(``fit_class_scores``); measured with the packaged model's own anchors, beside the same fit with
other pulls, and the rules it replaced or was weighed against: the nearest class mean, the nearest
single training caption, k nearest captions voting, the nearest action mean, and gating the
class-mean anchor by the margin between the two nearest classes or by the similarity itself (a
gated-out prompt would be read alone).

Usage: python bench/anchor_rules.py --data ../shared/data/bandai-namco [--cache DIR]
       [--out bench/results/bandai-text/anchor-rules.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mofusion.checkpoint import default_checkpoint
from mofusion.conditioning import CaptionBank, PromptAnchors, fit_class_scores, unit_class_means
from mofusion.config import DataConfig
from mofusion.data.dataset import load_dataset
from mofusion.pipeline import MotionPipeline


def unit_vectors(bank: CaptionBank) -> tuple[torch.Tensor, np.ndarray]:
    """A caption bank's pooled vectors (unit length), and the class index of each."""
    owner = np.repeat(np.arange(len(bank.label_names)), bank.counts.numpy())
    return torch.nn.functional.normalize(bank.table.pooled.float(), dim=1), owner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", default="bench/results/bandai-text/anchor-rules.json")
    args = parser.parse_args()

    # the packaged model: its anchors, its data settings and text encoder
    model = MotionPipeline.from_checkpoint(default_checkpoint(), "cpu")
    if model.anchors is None:
        raise SystemExit("the packaged model has no prompt anchors")
    config = DataConfig(**{**model.config.data.__dict__, "path": args.data})
    part = load_dataset(config, args.cache, model.normalizer.cpu(), progress=False).subset("train")
    banks = {
        split: CaptionBank(part.labels, part.names, model.config.condition, args.cache, split)
        for split in ("train", "test")
    }
    labels = banks["train"].label_names
    train, train_owner = unit_vectors(banks["train"])
    test, test_owner = unit_vectors(banks["test"])
    action = np.array([label.split("/")[0] for label in labels])
    truth = action[test_owner]

    rows: dict[str, float] = {}
    class_rows: dict[str, float] = {}

    def accuracy(name: str, predicted_class: np.ndarray) -> None:
        rows[name] = float(np.mean(action[predicted_class] == truth))
        class_rows[name] = float(np.mean(predicted_class == test_owner))

    def shipped_order(scores: torch.Tensor) -> np.ndarray:
        """Scores over the packaged anchors' classes, put in the caption bank's class order."""
        ordered = np.full((len(scores), len(labels)), -np.inf, dtype=np.float32)
        ordered[:, [labels.index(label) for label in model.anchors.labels]] = scores.numpy()
        return ordered

    # the anchors' rule, with the shipped anchors: the fitted classifier
    shipped = shipped_order(model.anchors.scores(test)).argmax(1)
    accuracy("fitted classifier (prompt anchors)", shipped)
    owner = torch.from_numpy(train_owner)
    for pull in (0.0, 1e-2):
        weights, bias = fit_class_scores(train, owner, len(labels), pull=pull)
        fitted = PromptAnchors(labels, labels, weights, bias)
        accuracy(f"fitted classifier, pull {pull:g}", np.array(fitted.nearest(test)))
    to_class = (test @ unit_class_means(train, owner, len(labels)).T).numpy()
    accuracy("class mean", to_class.argmax(1))
    to_caption = (test @ train.T).numpy()
    accuracy("nearest training caption", train_owner[to_caption.argmax(1)])
    for k in (5, 16, 32):
        votes = train_owner[np.argsort(-to_caption, axis=1)[:, :k]]
        accuracy(f"{k} nearest captions vote", np.array([np.bincount(v).argmax() for v in votes]))
    actions = sorted(set(action))
    action_of_train = np.array([actions.index(a) for a in action[train_owner]])
    action_means = torch.nn.functional.normalize(
        torch.stack([train[action_of_train == a].mean(0) for a in range(len(actions))]), dim=1
    )
    nearest_action = np.array(actions)[(test @ action_means.T).numpy().argmax(1)]
    rows["action mean"] = float(np.mean(nearest_action == truth))

    right = action[to_class.argmax(1)] == truth
    ordered = np.sort(to_class, axis=1)
    gates = {}
    for name, score, thresholds in (
        ("margin", ordered[:, -1] - ordered[:, -2], (0.01, 0.02, 0.04)),
        ("similarity", ordered[:, -1], (0.5, 0.6, 0.7)),
    ):
        for threshold in thresholds:
            used = score > threshold
            gates[f"{name} > {threshold}"] = {
                "anchored_share": float(used.mean()),
                "right_when_anchored": float(right[used].mean()),
                "right_when_gated_out": float(right[~used].mean()) if (~used).any() else None,
            }
    fitted_right = action[shipped] == truth
    per_action = {
        a: {"class_mean": float(right[truth == a].mean()), "fitted": float(fitted_right[truth == a].mean())}
        for a in actions
    }

    print(
        f"{len(test)} held-out-wording captions of {len(labels)} training classes; "
        "right action (right class):"
    )
    for name, value in rows.items():
        exact = f" ({class_rows[name]:.3f})" if name in class_rows else ""
        print(f"  {name:36s} {value:.3f}{exact}")
    for name, gate in gates.items():
        print(
            f"  class-mean gate {name:16s} anchored {gate['anchored_share']:.2f}, right when anchored "
            f"{gate['right_when_anchored']:.3f}, when gated out {gate['right_when_gated_out']:.3f}"
        )
    print(
        "  per action, class mean / fitted: "
        + ", ".join(f"{a} {v['class_mean']:.2f}/{v['fitted']:.2f}" for a, v in per_action.items())
    )
    result = {
        "captions": len(test),
        "classes": len(labels),
        "right_action": rows,
        "right_class": class_rows,
        "class_mean_gates": gates,
        "per_action": per_action,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
