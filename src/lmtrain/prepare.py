"""`lmtrain prepare`: corpus -> SentencePiece tokenizer -> sharded TFRecords + meta.json.

Everything is streamed document by document and line by line, so memory does not grow with the
corpus (SentencePiece itself keeps a bounded sample of lines). Outputs are built in a temporary
sibling directory and moved into place only when complete, so a killed prepare never leaves a
directory that `fit` would take for finished data, and `--force` keeps the old data until the
new data is complete.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from lmtrain.config import Config
from lmtrain.corpus import Document, list_documents, split_documents
from lmtrain.errors import LmtrainError
from lmtrain.paths import SPLITS, DataPaths
from lmtrain.records import ShardWriter
from lmtrain.tokenizer import EOS_ID, Tokenizer, train_tokenizer

META_VERSION = 1


@dataclass(frozen=True)
class PrepareResult:
    paths: DataPaths
    meta: dict[str, Any]
    skipped: bool  # True when the directory already held data prepared from the same config


def prepare(config: Config, force: bool = False, progress: bool = True) -> PrepareResult:
    """Prepare `config.data.dir`; a no-op if it already holds data from the same config."""
    paths = DataPaths(Path(config.data.dir))
    fingerprint = config.data_fingerprint()
    if paths.meta.is_file():
        old = load_meta(paths)
        if old.get("fingerprint") == fingerprint and not force:
            return PrepareResult(paths, old, skipped=True)
        if not force:
            raise LmtrainError(
                f"data.dir: {paths.root} holds data prepared from a different data/tokenizer config; "
                f"use --force to rebuild it, or choose another data.dir"
            )
    elif paths.root.exists() and any(paths.root.iterdir()) and not force:
        raise LmtrainError(f"data.dir: {paths.root} exists and is not an lmtrain data directory; use --force or another data.dir")

    docs = list_documents(config.data.corpus)
    splits = split_documents(docs, config.data.valid_fraction, config.data.test_fraction)

    tmp = paths.root.with_name(f".{paths.root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = _build(config, splits, DataPaths(tmp), fingerprint, progress)
        _replace_dir(tmp, paths.root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PrepareResult(paths, meta, skipped=False)


def load_meta(paths: DataPaths) -> dict[str, Any]:
    """meta.json of a prepared directory; a clear error if `prepare` has not been run."""
    if not paths.meta.is_file():
        raise LmtrainError(f"no prepared data in {paths.root}: run `lmtrain prepare` with this config first")
    try:
        meta = json.loads(paths.meta.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LmtrainError(f"{paths.meta}: unreadable ({exc}); run `lmtrain prepare --force`") from None
    if meta.get("version") != META_VERSION:
        raise LmtrainError(f"{paths.meta}: written by another lmtrain version; run `lmtrain prepare --force`")
    return meta


def _build(config: Config, splits: dict[str, list[Document]], paths: DataPaths, fingerprint: str,
           progress: bool) -> dict[str, Any]:
    train_docs = splits["train"]
    bar = tqdm(total=len(train_docs), desc="tokenizer", unit="doc", disable=not progress)
    tokenizer = train_tokenizer(_lines(train_docs, bar), config.tokenizer, paths.tokenizer_prefix)
    bar.close()

    vocab = tokenizer.vocab_size
    counts = np.zeros(vocab, dtype=np.int64)
    split_meta: dict[str, Any] = {}
    for split in SPLITS:
        docs = splits[split]
        writer = ShardWriter(paths, split, config.data.shard_tokens)
        stats = {"documents": len(docs), "tokens": 0, "characters": 0, "bytes": 0, "words": 0}
        bar = tqdm(total=len(docs), desc=f"encode {split}", unit="doc", disable=not progress)
        for doc in docs:
            for line, ids in _encoded_lines(doc, tokenizer):
                stats["characters"] += len(line) + 1
                stats["bytes"] += len(line.encode("utf-8")) + 1
                stats["words"] += len(line.split())
                writer.write(ids)
                if split == "train":
                    counts += np.bincount(ids, minlength=vocab)
            writer.write([EOS_ID])
            if split == "train":
                counts[EOS_ID] += 1
            bar.update(1)
            bar.set_postfix(tokens=writer.tokens)
        bar.close()
        stats["tokens"] = writer.tokens
        stats["shards"] = writer.close()
        split_meta[split] = stats
    if split_meta["train"]["tokens"] < 2:
        raise LmtrainError("data.corpus: the training split holds no text")

    meta = {
        "version": META_VERSION,
        "fingerprint": fingerprint,
        "vocab_size": vocab,
        "splits": split_meta,
        "documents": {s: [d.name for d in splits[s]] for s in SPLITS},
        "unigram_counts": counts.tolist(),
    }
    paths.meta.write_text(json.dumps(meta))
    return meta


def _lines(docs: list[Document], bar: tqdm) -> Iterator[str]:
    for doc in docs:
        yield from doc.lines()
        bar.update(1)


def _encoded_lines(doc: Document, tokenizer: Tokenizer, batch: int = 4096) -> Iterator[tuple[str, list[int]]]:
    """(line, ids) pairs of a document, encoded a batch of lines at a time (memory stays flat)."""
    lines = doc.lines()
    while chunk := list(itertools.islice(lines, batch)):
        yield from zip(chunk, tokenizer.encode_lines(chunk))


def _replace_dir(new: Path, target: Path) -> None:
    """Move a completed directory into place; the old one is removed only after the swap."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
