"""Conditions for training and generation: captions of training clips and encoded prompts.

Training with ``condition.kind = "text"`` gives every clip the trained-phrasing captions of its
content/style label (:mod:`mofusion.captions`); each window draws one of them per step. The
captions are encoded once (and cached) with the configured text encoder, so a training step only
gathers rows of an embedding table.

Prompt anchors (``sample.anchor_prompts``): a prompt is read together with the trained caption of
the training class it lands on in the encoder's sentence space ("someone strolls along
cheerfully" with "a person walks happily"), so wording the model never saw still lands on what it
learnt. Measured on held-out wording in bench/results/bandai-text.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .captions import anchor_caption, caption_label, captions_for, has_captions
from .config import ConditionConfig
from .encoders import (
    EmbeddingTable,
    TextEmbedding,
    TextEncoder,
    check_text,
    embed_texts,
    load_text_encoder,
    pad_tokens,
)
from .errors import MofusionError


class CaptionBank:
    """Training captions of a list of clips, encoded, with one draw per window.

    Args:
        labels: per clip, its label dict (``content``, ``style``).
        names: clip names, for error messages.
        cfg: the condition configuration (encoder, tokens, captions per label).
        cache: where encoded captions are kept between runs.
        split: ``"train"`` phrasings (training, validation) or held-out ``"test"`` phrasings.
    """

    def __init__(
        self,
        labels: Sequence[dict[str, str]],
        names: Sequence[str],
        cfg: ConditionConfig,
        cache: str | Path | None = None,
        split: str = "train",
        device: torch.device | str = "cpu",
    ) -> None:
        for name, label in zip(names, labels, strict=True):
            if not has_captions(label):
                raise MofusionError(
                    f"clip {name}: text conditioning needs captions, and its labels {label or '{}'} "
                    "have none (known: Bandai-Namco content and style labels)"
                )
        example = {caption_label(label): label for label in labels}
        self.label_names = sorted(example)
        self.label_examples = [example[name] for name in self.label_names]
        label_index = {name: i for i, name in enumerate(self.label_names)}
        texts: list[str] = []
        starts, counts = [], []
        for name in self.label_names:
            captions = captions_for(example[name], split, cfg.captions_per_label)  # type: ignore[arg-type]
            starts.append(len(texts))
            counts.append(len(captions))
            texts.extend(captions)
        # encoded where training runs (seconds on a GPU for what takes minutes on two CPU cores)
        encoder = load_text_encoder(cfg.text_encoder, cfg.max_tokens, str(torch.device(device)))
        self.table: EmbeddingTable = embed_texts(encoder, texts, cache)
        self.dim = encoder.dim
        self.device = torch.device(device)
        self.clip_label = torch.tensor([label_index[caption_label(label)] for label in labels])
        self.starts = torch.tensor(starts)
        self.counts = torch.tensor(counts)
        tokens, mask = self.table.tokens, self.table.mask
        if cfg.sentence_token:
            tokens, mask = with_sentence_token(tokens, mask, self.table.pooled)
        self.tokens = tokens.to(self.device)
        self.mask = mask.to(self.device)

    def draw(self, clips: Tensor, generator: torch.Generator) -> Tensor:
        """A random caption index for each window's clip."""
        label = self.clip_label[clips.cpu()]
        offset = (
            torch.rand(len(label), generator=generator, dtype=torch.float64) * self.counts[label]
        ).long()
        return self.starts[label] + offset

    def first(self, clips: Tensor) -> Tensor:
        """The first caption of each clip's label (fixed validation conditions)."""
        return self.starts[self.clip_label[clips.cpu()]]

    def condition(self, captions: Tensor) -> tuple[Tensor, Tensor]:
        index = captions.to(self.device)
        return self.tokens[index], self.mask[index]


@dataclass
class PromptAnchors:
    """The training classes in the text encoder's sentence space, as a linear classifier of unit
    pooled prompt vectors (``scores = vectors @ q + bias``), and one plain trained caption per class
    to read beside a prompt that lands on it.

    Built from the training captions (:meth:`from_bank`): the class means of their unit pooled
    vectors, refined by a softmax classifier fitted on the same captions and pulled back towards
    the means. The fit learns which directions of the sentence space tell actions apart (MiniLM
    puts "nervously" next to "without confidence" whatever the verb); on held-out wording it finds
    the right action for 86 % of captions against the class means' 83 %
    (bench/results/bandai-text/anchor-rules.json). Anchors with no bias are the plain class means
    (nearest by cosine)."""

    labels: list[str]
    texts: list[str]
    vectors: Tensor  # (classes, D)
    bias: Tensor | None = None  # (classes,)

    FILE = "anchors.safetensors"
    FIT_STEPS = 300
    FIT_SCALE = 10.0  # logits are this times a cosine-like score: a softmax that is not flat
    FIT_PULL = 1e-3  # weight of the squared distance from the class means

    @classmethod
    def from_bank(cls, bank: CaptionBank) -> PromptAnchors | None:
        """From a training caption bank, or None when its classes are clips with written captions."""
        if any("captions" in example for example in bank.label_examples):
            return None  # one class per clip: thousands of "classes", none of them a class
        pooled = torch.nn.functional.normalize(bank.table.pooled.float(), dim=1)
        owner = torch.repeat_interleave(torch.arange(len(bank.counts)), bank.counts)
        vectors, bias = fit_class_scores(pooled, owner, len(bank.counts))
        texts = [anchor_caption(example) for example in bank.label_examples]
        return cls(list(bank.label_names), texts, vectors, bias)

    def scores(self, pooled: Tensor) -> Tensor:
        """Class scores ``(N, classes)`` of pooled prompt vectors ``(N, D)`` (made unit length)."""
        query = torch.nn.functional.normalize(pooled.float().cpu(), dim=1)
        scores = query @ self.vectors.T
        return scores if self.bias is None else scores + self.bias

    def nearest(self, pooled: Tensor) -> list[int]:
        """The best-scoring class of each pooled prompt vector ``(N, D)``."""
        return self.scores(pooled).argmax(1).tolist()

    def save(self, path: str | Path) -> None:
        meta = {"labels": json.dumps(self.labels), "texts": json.dumps(self.texts)}
        tensors = {"vectors": self.vectors.float().contiguous()}
        if self.bias is not None:
            tensors["bias"] = self.bias.float().contiguous()
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> PromptAnchors:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
        tensors = load_file(str(path))
        vectors = tensors["vectors"].float()
        bias = tensors["bias"].float() if "bias" in tensors else None
        labels, texts = json.loads(meta["labels"]), json.loads(meta["texts"])
        if not (len(labels) == len(texts) == len(vectors)) or (bias is not None and len(bias) != len(labels)):
            raise ValueError("labels, texts, vectors and bias differ in length")
        return cls(labels, texts, vectors, bias)


def unit_class_means(unit: Tensor, owner: Tensor, classes: int) -> Tensor:
    """Per class, the mean of its unit vectors ``(N, D)`` (``owner``: class of each), made unit:
    the class-mean anchors, and the start of :func:`fit_class_scores`."""
    means = torch.zeros(classes, unit.shape[1], dtype=unit.dtype).index_add_(0, owner, unit)
    return torch.nn.functional.normalize(means, dim=1)


def fit_class_scores(
    unit: Tensor,
    owner: Tensor,
    classes: int,
    steps: int = PromptAnchors.FIT_STEPS,
    scale: float = PromptAnchors.FIT_SCALE,
    pull: float = PromptAnchors.FIT_PULL,
) -> tuple[Tensor, Tensor]:
    """A softmax classifier of unit vectors ``(N, D)`` into the classes ``owner`` (N,), started
    at the unit class means and pulled towards them (``pull``): returns the weights ``(classes,
    D)`` and bias ``(classes,)``, both with ``scale`` folded in. Full-batch Adam from a fixed start:
    the same captions give the same anchors."""
    with torch.inference_mode(False), torch.enable_grad():  # also when called for an export
        unit, owner = unit.float().cpu().clone(), owner.cpu().clone()
        means = unit_class_means(unit, owner, classes)
        weights = means.clone().requires_grad_(True)
        bias = torch.zeros(classes, requires_grad=True)
        optimizer = torch.optim.Adam([weights, bias], lr=1e-2)
        for _ in range(steps):
            logits = scale * (unit @ weights.T) + bias
            loss = torch.nn.functional.cross_entropy(logits, owner)
            loss = loss + pull * (weights - means).pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return scale * weights.detach(), bias.detach()


def encode_prompts(
    cfg: ConditionConfig,
    texts: Sequence[str],
    device: torch.device | str = "cpu",
    anchors: PromptAnchors | None = None,
) -> tuple[Tensor, Tensor]:
    """Condition tokens and mask for prompts (see :func:`read_prompts`)."""
    tokens, mask, _ = read_prompts(cfg, texts, device, anchors)
    return tokens, mask


def read_prompts(
    cfg: ConditionConfig,
    texts: Sequence[str],
    device: torch.device | str = "cpu",
    anchors: PromptAnchors | None = None,
) -> tuple[Tensor, Tensor, list[str] | None]:
    """Condition tokens and mask for prompts, checked (empty, too long, not UTF-8), on ``device``
    (the encoder runs there: on a GPU it costs a millisecond instead of tens on a CPU), and the
    anchor caption each prompt was read with (None without ``anchors``).

    With ``anchors``, each prompt's tokens are followed by those of its nearest class's caption
    (padding of the first part stays masked), so cross-attention reads both."""
    if cfg.kind != "text":
        raise MofusionError("this checkpoint is not a text model; generate without --text")
    checked = [check_text(t) for t in texts]
    encoder = load_text_encoder(cfg.text_encoder, cfg.max_tokens, str(torch.device(device)))

    def condition(embedding: TextEmbedding) -> tuple[Tensor, Tensor]:
        if cfg.sentence_token:
            return with_sentence_token(embedding.tokens, embedding.mask, embedding.pooled)
        return embedding.tokens, embedding.mask

    embedding = encoder.encode(checked)
    tokens, mask = condition(embedding)
    if anchors is None:
        return tokens, mask, None
    read_with = [anchors.texts[i] for i in anchors.nearest(embedding.pooled)]
    known = _ANCHOR_STATES.setdefault(encoder, {})
    for caption in dict.fromkeys(read_with):
        if (caption, cfg.sentence_token) not in known:
            known[caption, cfg.sentence_token] = condition(encoder.encode([caption]))
    parts = [known[caption, cfg.sentence_token] for caption in read_with]
    length = max(part[0].shape[1] for part in parts)
    padded = [pad_tokens(part_tokens, part_mask, length) for part_tokens, part_mask in parts]
    extra = torch.cat([part_tokens for part_tokens, _ in padded])
    extra_mask = torch.cat([part_mask for _, part_mask in padded])
    tokens = torch.cat((tokens, extra.to(tokens)), dim=1)
    return tokens, torch.cat((mask, extra_mask.to(mask)), dim=1), read_with


_ANCHOR_STATES: weakref.WeakKeyDictionary[TextEncoder, dict[tuple[str, bool], tuple[Tensor, Tensor]]]
_ANCHOR_STATES = weakref.WeakKeyDictionary()
"""Each anchor caption's condition tokens and mask by encoder, encoded on first use: the captions
are a fixed table of the model (one per class), so a prompt costs one encoder pass, not two. Each
is encoded alone; a batch's are padded with masked zeros (the masked positions take no weight in
cross-attention or the pooled bias)."""


def with_sentence_token(tokens: Tensor, mask: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
    """The pooled sentence vector ``(N, D)`` put before the token states ``(N, L, D)`` as one more
    (always real) token: the sentence's meaning in one place, beside the words."""
    first = torch.ones(mask.shape[0], 1, dtype=mask.dtype, device=mask.device)
    return torch.cat((pooled[:, None].to(tokens), tokens), dim=1), torch.cat((first, mask), dim=1)
