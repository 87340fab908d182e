"""Conditions for training and generation: captions of training clips and encoded prompts.

Training with ``condition.kind = "text"`` gives every clip the trained-phrasing captions of its
content/style label (:mod:`mofusion.captions`); each window draws one of them per step. The
captions are encoded once (and cached) with the configured text encoder, so a training step only
gathers rows of an embedding table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .captions import caption_label, captions_for, has_captions
from .config import ConditionConfig
from .encoders import EmbeddingTable, check_text, embed_texts, load_text_encoder
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


def encode_prompts(
    cfg: ConditionConfig, texts: Sequence[str], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Condition tokens and mask for prompts, checked (empty, too long, not UTF-8), on ``device``
    (the encoder runs there: on a GPU it costs a millisecond instead of tens on a CPU)."""
    if cfg.kind != "text":
        raise MofusionError("this checkpoint is not a text model; generate without --text")
    checked = [check_text(t) for t in texts]
    embedding = load_text_encoder(cfg.text_encoder, cfg.max_tokens, str(torch.device(device))).encode(checked)
    if cfg.sentence_token:
        return with_sentence_token(embedding.tokens, embedding.mask, embedding.pooled)
    return embedding.tokens, embedding.mask


def with_sentence_token(tokens: Tensor, mask: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
    """The pooled sentence vector ``(N, D)`` put before the token states ``(N, L, D)`` as one more
    (always real) token: the sentence's meaning in one place, beside the words."""
    first = torch.ones(mask.shape[0], 1, dtype=mask.dtype, device=mask.device)
    return torch.cat((pooled[:, None].to(tokens), tokens), dim=1), torch.cat((first, mask), dim=1)
