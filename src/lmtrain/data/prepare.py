"""`lmtrain prepare`: corpus -> SentencePiece tokenizer -> sharded TFRecords + meta.json.

Everything is streamed document by document, a block of lines at a time, so memory does not
grow with the corpus (the tokenizer trains on a bounded, seeded sample of lines); blocks are
encoded in parallel by worker processes (`lmtrain.data.encode`). Outputs are built in a temporary
sibling directory, flushed, marked complete (`.complete`, written last) and only then moved into
place, so a killed prepare never leaves a directory that `fit` would take for finished data,
`--force` keeps the old data until the new data is complete, and the next prepare cleans up
whatever a killed one left behind.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lmtrain.config.schema import Config
from lmtrain.data.corpus import Document, split_corpus
from lmtrain.data.encode import BlockEncoder, default_workers
from lmtrain.data.meta import DataMeta, SplitStats, load_prepared
from lmtrain.data.shards import ShardWriter
from lmtrain.data.tokenizer import EOS_ID, UNK_ID, train_tokenizer
from lmtrain.data.vocabsample import count_words, sample_lines
from lmtrain.errors import LmtrainError, describe_write_error
from lmtrain.lock import data_dir_lock
from lmtrain.paths import SPLITS, DataPaths
from lmtrain.progress import progress_bar

_TMP_PREFIX = ".{}.tmp-"  # beside data.dir: a prepare being built (or killed while building)
_OLD_PREFIX = ".{}.old-"  # beside data.dir: the previous data, while the new data moves in
Echo = Callable[[str], None]


@dataclass(frozen=True)
class PrepareResult:
    paths: DataPaths
    meta: DataMeta
    skipped: bool  # True when the directory already held data prepared from the same config


def prepare(config: Config, force: bool = False, progress: bool = True, echo: Echo = print) -> PrepareResult:
    """Prepare `config.data.dir`; a no-op if it already holds data from the same config. The data
    directory's lock is held throughout: a second prepare into it stops at once (`lmtrain.lock`)."""
    paths = DataPaths(Path(config.data.dir))
    with data_dir_lock(paths.root, echo):
        return _prepare(config, paths, force, progress, echo)


def _prepare(config: Config, paths: DataPaths, force: bool, progress: bool, echo: Echo) -> PrepareResult:
    _clean_leftovers(paths.root, echo)
    fingerprint = config.data_fingerprint()
    if paths.complete.is_file():
        old = load_prepared(paths)
        if old.fingerprint == fingerprint and not force:
            return PrepareResult(paths, old, skipped=True)
        if not force:
            raise LmtrainError(
                f"data.dir: {paths.root} holds data prepared from a different data/tokenizer config; "
                f"use --force to rebuild it, or choose another data.dir"
            )
    elif paths.root.exists() and any(paths.root.iterdir()) and not force:
        raise LmtrainError(
            f"data.dir: {paths.root} exists and is not a finished lmtrain data directory; use --force or "
            "another data.dir"
        )

    splits = split_corpus(config.data.corpus, config.data.valid_share, config.data.test_share, config.data.text_field)

    tmp = paths.root.with_name(f"{_TMP_PREFIX.format(paths.root.name)}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        meta = _build(config, splits, DataPaths(tmp), fingerprint, progress, echo)
        _replace_dir(tmp, paths.root)
    except OSError as exc:
        state = f"{paths.root} is unchanged" if paths.root.exists() else "nothing was written"
        where = exc.filename or tmp  # the file, when the system names it
        raise LmtrainError(f"prepare could not write {where}: {describe_write_error(exc)}; {state}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PrepareResult(paths, meta, skipped=False)


def _build(config: Config, splits: dict[str, list[Document]], paths: DataPaths, fingerprint: str,
           progress: bool, echo: Echo) -> DataMeta:
    all_docs = [doc for split in SPLITS for doc in splits[split]]
    # The encoding workers start first, so that they are ready when the tokenizer is.
    with BlockEncoder(paths.tokenizer, default_workers(all_docs, config.data.workers)) as encoder:
        train_docs = splits["train"]
        bar = progress_bar(total=len(train_docs), desc="tokenizer", unit="doc", disable=not progress)
        if config.tokenizer.vocab_size is None:  # every word of the training split (seen min_count times)
            sample, words = [], count_words(train_docs, config.tokenizer.min_count)
        else:
            sample = sample_lines(train_docs, config.tokenizer.max_sentences, on_document=lambda: bar.update(1),
                                  max_bytes=config.tokenizer.max_sample_bytes)
            words = None
        bar.close()
        tokenizer = train_tokenizer(sample, config.tokenizer, paths.tokenizer, words)
        del sample, words
        split_meta, counts, replaced = _encode(splits, encoder, tokenizer.vocab_size, config, paths, progress)

    if split_meta["train"].tokens < 2:
        raise LmtrainError("data.corpus: the training split holds no text")

    meta = DataMeta(fingerprint=fingerprint, vocab_size=tokenizer.vocab_size, splits=split_meta,
                    documents={s: [d.name for d in splits[s]] for s in SPLITS}, unigram_counts=counts.tolist(),
                    replaced_characters=replaced)
    if replaced:
        echo(f"warning: {len(replaced)} file(s) held bytes that are not UTF-8; "
             f"{sum(replaced.values())} character(s) replaced in all (listed in meta.json)")
    paths.meta.write_text(meta.to_json())
    _fsync_files(paths.root)
    paths.complete.write_text(fingerprint + "\n")  # last: the directory is now finished data
    return meta


def _encode(splits: dict[str, list[Document]], encoder: BlockEncoder, vocab: int, config: Config, paths: DataPaths,
            progress: bool) -> tuple[dict[str, SplitStats], np.ndarray, dict[str, int]]:
    """Encode and write every split: (per-split stats, training unigram counts, replaced
    characters per file)."""
    counts = np.zeros(vocab, dtype=np.int64)
    replaced: dict[str, int] = {}
    split_meta: dict[str, SplitStats] = {}
    for split in SPLITS:
        docs = splits[split]
        writer = ShardWriter(paths, split, config.data.shard_tokens)
        stats = {"documents": len(docs), "parts": sum(doc.is_part for doc in docs), "tokens": 0, "characters": 0,
                 "bytes": 0, "words": 0, "unk_tokens": 0}
        bar = progress_bar(total=len(docs), desc=f"encode {split}", unit="doc", disable=not progress)
        bad = 0  # characters of the current document replaced for not being UTF-8
        for doc, block in encoder.encode(docs):
            if block is not None:
                stats["characters"] += block.characters
                stats["bytes"] += block.bytes
                stats["words"] += block.words
                bad += block.replaced
                stats["unk_tokens"] += int(np.count_nonzero(block.ids == UNK_ID))
                writer.write(block.ids)
                if split == "train":
                    counts += np.bincount(block.ids, minlength=vocab)
                continue
            # A file's real end (not a part cut before it) gets </s>; a record's came with its ids.
            if doc.ends_document and not doc.holds_records:
                writer.write([EOS_ID])
                if split == "train":
                    counts[EOS_ID] += 1
            if bad:
                replaced[str(doc.path)] = bad
                bar.write(f"warning: {doc.path}: {bad} character(s) not valid UTF-8, replaced with U+FFFD")
                bad = 0
            bar.update(1)
            bar.set_postfix(tokens=writer.tokens)
        bar.close()
        stats["tokens"] = writer.tokens
        split_meta[split] = SplitStats(**stats, shard_bytes=writer.close())
    return split_meta, counts, replaced


def _replace_dir(new: Path, target: Path) -> None:
    """Move a completed directory into place; the old one is removed only after the swap.

    Two renames, so a kill between them leaves no `target` but the old data under its
    `.old-` name; `_clean_leftovers` puts it back on the next run.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f"{_OLD_PREFIX.format(target.name)}{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _clean_leftovers(target: Path, echo: Echo) -> None:
    """Undo what a prepare killed part-way left beside `target`: an unfinished temporary
    directory is deleted; old data moved aside but not yet replaced is put back."""
    if not target.parent.is_dir():
        return
    for tmp in sorted(target.parent.glob(f"{_TMP_PREFIX.format(target.name)}*")):
        shutil.rmtree(tmp, ignore_errors=True)
        echo(f"removed {tmp}, left by an unfinished prepare")
    for old in sorted(target.parent.glob(f"{_OLD_PREFIX.format(target.name)}*")):
        if not target.exists():
            old.rename(target)
            echo(f"restored {target} from {old}, left by an interrupted prepare")
        else:
            shutil.rmtree(old, ignore_errors=True)


def _fsync_files(directory: Path) -> None:
    """Flush every file of a finished directory before it is marked complete."""
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
