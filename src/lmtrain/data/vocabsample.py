"""What `prepare` reads to build the vocabulary: a seeded uniform sample of a corpus's lines (what
SentencePiece trains on) and, for word-level vocabularies, every word's count.

Both stream the documents block by block (`lmtrain.data.corpus`), so memory holds only the chosen lines
or the counts, never the corpus.
"""

from __future__ import annotations

import collections
from typing import Callable, Sequence

import numpy as np

from lmtrain.data import formats
from lmtrain.data.corpus import Block, Document, block_lines


def sample_lines(docs: Sequence[Document], k: int, seed: int = 0,
                 on_document: Callable[[], None] | None = None, max_bytes: int | None = None) -> list[str]:
    """A seeded uniform sample of at most `k` non-blank lines of the documents, in corpus order:
    what SentencePiece trains on. All non-blank lines when the documents hold at most `k` lines.
    With `max_bytes`, `k` is lowered so that the sample holds about that many bytes at the
    corpus's mean line length. In JSON Lines and Parquet files a unit drawn is a record, and
    all its lines are taken.

    Two cheap passes instead of a reservoir over every line: the first counts lines per block
    (`bytes.count`), the second decodes only the chosen lines, found through the positions of
    the line ends in their block (records: the blocks that hold a chosen one). Lines are chosen
    among all lines and blank ones dropped after, so a corpus with many blank lines gives
    somewhat fewer than `k`. A gigabyte costs a few seconds; memory holds the chosen line
    numbers and lines.
    """
    total, size = 0, 0
    for doc in docs:
        for block in doc.blocks():
            total += block.units
            size += block.nbytes
    if max_bytes is not None and size > max_bytes:
        k = min(k, max(100, int(max_bytes * total / size)))
    if total <= k:
        lines = []
        for doc in docs:
            lines.extend(filter(str.strip, doc.lines()))
            if on_document:
                on_document()
        return lines
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False))
    lines, start = [], 0  # start: number of the first line of the current block
    for doc in docs:
        for block in doc.blocks():
            n = block.units
            lo, hi = np.searchsorted(chosen, [start, start + n])
            if lo < hi:
                lines.extend(line for line in _chosen_lines(doc, block, chosen[lo:hi] - start) if line.strip())
            start += n
        if on_document:
            on_document()
    return lines


def _chosen_lines(doc: Document, block: Block, chosen: np.ndarray) -> list[str]:
    """The lines of the chosen units (lines or records) of a block. Records are decoded in
    full (which checks them all); lines of text are found through the positions of the line
    ends, so only the chosen ones are decoded."""
    if doc.holds_records:
        records = doc.texts(block)
        return [line for i in chosen if (record := records[i]) is not None
                for line in formats.document_lines(record[0])]
    data = block.data
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    lines = []
    for i in chosen:
        first = ends[i - 1] + 1 if i > 0 else 0
        last = ends[i] if i < len(ends) else len(data)
        lines.extend(block_lines(data[first:last], doc.kind == "markdown"))
    return lines


def count_words(docs: Sequence[Document], min_count: int = 1) -> dict[str, int]:
    """How often each whitespace-separated word occurs in the documents (one streaming pass),
    for the words seen at least `min_count` times: the rest become `<unk>` when encoded, so
    `<unk>` is trained on them (with every word kept, it never occurs in training)."""
    counts: collections.Counter[str] = collections.Counter()
    for doc in docs:
        for block in doc.blocks():
            for line in doc.decode(block)[0]:
                counts.update(line.split())
    return {word: n for word, n in counts.items() if n >= min_count}
