"""Encoding a corpus to token ids for `prepare`: blocks of lines, in parallel, in order.

Encoding is where `prepare` spends its time (SentencePiece runs at a few MB/s per core), so
documents are cut into blocks of whole lines (`Document.blocks`) and each block is decoded,
encoded, flattened and counted by one worker process, while the parent only reads blocks,
writes records and counts ids. Results come back in corpus order, and at most `window` blocks
are in flight, so memory stays flat whatever the corpus size.

The workers are spawned, not forked: the parent has TensorFlow loaded, whose threads do not
survive a fork. This module imports neither TensorFlow nor anything that does, so a worker
starts in well under a second with only SentencePiece and NumPy. A small corpus is encoded in
the parent (with SentencePiece's own threads), which gives the same ids without the start-up.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lmtrain.data.corpus import Block, Document, ReadReport
from lmtrain.data.tokenizer import Tokenizer
from lmtrain.errors import LmtrainError

# Below this many bytes of corpus, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 64 << 20


@dataclass(frozen=True)
class EncodedBlock:
    """One block of a document, encoded, with the counts `prepare` records per split."""

    ids: np.ndarray  # int32: each line's ids followed by <nl> (and each record's lines by </s>)
    characters: int  # of the lines, each with its line end, as read
    bytes: int  # UTF-8 bytes of the same
    words: int  # whitespace-separated words
    replaced: int  # characters that were not valid UTF-8 (replaced with U+FFFD)


def encode_block(tokenizer: Tokenizer, doc: Document, block: Block, threads: int | None = None) -> EncodedBlock:
    """Decode, split, encode and count one block of a document."""
    report = ReadReport()
    lines, records = doc.decode(block, report)
    ids = tokenizer.encode_stream(lines, threads, records)
    characters = sum(map(len, lines)) + len(lines)
    data = block.data
    if doc.kind == "text" and not report.replaced and b"\r" not in data:
        # the lines are the block itself: every byte read, and a line end after the last line
        size = len(data) + (0 if data.endswith(b"\n") or not data else 1)
    else:
        size = sum(len(line.encode("utf-8")) for line in lines) + len(lines)
    words = sum(map(len, map(str.split, lines)))
    return EncodedBlock(ids, characters, size, words, report.replaced)


class BlockEncoder:
    """Encode documents block by block, in `workers` processes (1: in this process), with the
    tokenizer at `tokenizer_path`, which need not exist until the first block is encoded."""

    def __init__(self, tokenizer_path: Path, workers: int, block_bytes: int | None = None) -> None:
        self.workers = max(1, workers)
        self._block_bytes = block_bytes
        self._tokenizer_path = tokenizer_path
        self._pool: ProcessPoolExecutor | None = None
        self._local: Tokenizer | None = None
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            # Start the workers now: they import while the parent trains the tokenizer.
            for _ in range(self.workers):
                self._pool.submit(_ready)
        self.window = 2 * self.workers + 1  # blocks in flight: every worker busy, one result waiting

    def __enter__(self) -> "BlockEncoder":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def encode(self, docs: Iterable[Document]) -> Iterator[tuple[Document, EncodedBlock | None]]:
        """(document, block) for each block in corpus order, then (document, None) at its end."""
        pending: deque[tuple[Document, Future | None]] = deque()
        for doc in docs:
            for block in doc.blocks(self._block_bytes):
                pending.append((doc, self._submit(doc, block)))
                while len(pending) > self.window:
                    yield _result(pending.popleft())
            pending.append((doc, None))
        while pending:
            yield _result(pending.popleft())

    def _submit(self, doc: Document, block: Block) -> Future:
        if self._pool is not None:
            return self._pool.submit(_encode_in_worker, str(self._tokenizer_path), doc, block)
        if self._local is None:
            self._local = Tokenizer(self._tokenizer_path)
        done: Future = Future()
        done.set_result(encode_block(self._local, doc, block))
        return done


def default_workers(docs: Iterable[Document], setting: int | None) -> int:
    """`data.workers`, or with null: every core for a corpus large enough to gain from it."""
    if setting is not None:
        return setting
    size = 0
    for doc in docs:
        try:
            size += doc.size  # the part of the file it covers: a file cut into splits counts once
        except OSError:
            pass  # reported when the document is read
    return (os.cpu_count() or 1) if size >= PARALLEL_MIN_BYTES else 1


def _result(item: tuple[Document, Future | None]) -> tuple[Document, EncodedBlock | None]:
    doc, future = item
    try:
        return doc, (future.result() if future is not None else None)
    except BrokenProcessPool:
        raise LmtrainError(
            "data.workers: an encoding worker process died (out of memory, or killed). Called from a "
            "Python script, prepare needs the script's code under `if __name__ == \"__main__\":` to start "
            "workers; data.workers=1 encodes in one process"
        ) from None


# ---- in the worker processes ------------------------------------------------------------------
_worker_tokenizers: dict[str, Tokenizer] = {}  # per worker process: loaded on its first block


def _ready() -> None:
    """A no-op: submitting it makes the pool start a worker (which imports this module)."""


def _encode_in_worker(tokenizer_path: str, doc: Document, block: Block) -> EncodedBlock:
    tokenizer = _worker_tokenizers.get(tokenizer_path)
    if tokenizer is None:
        tokenizer = _worker_tokenizers[tokenizer_path] = Tokenizer(Path(tokenizer_path))
    return encode_block(tokenizer, doc, block, threads=1)  # parallel across workers
