"""TFRecord shards of token ids, read as windows (fit/eval); `shards` writes them (prepare).

A split is one token stream (documents joined by `</s>`), cut into records of at most
`shards.RECORD_TOKENS` ids stored as raw little-endian int32, and into shards of about
`data.shard_tokens` ids. Readers see windows of `seq_len` inputs and the next-token targets:
window k holds inputs t[kT : kT+T] and targets t[kT+1 : kT+T+1], so every token but the first
of the stream is predicted exactly once. The last window is padded and masked, which makes
evaluation exact (every token counted) while keeping every batch the same shape.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from lmtrain.data import shards
from lmtrain.errors import LmtrainError, first_line
from lmtrain.paths import DataPaths


def split_files(paths: DataPaths, split: str, shard_bytes: Sequence[int]) -> list[Path]:
    """The shards of a split, each checked against the size `prepare` recorded.

    A stat per shard, no reading: a shard that is missing, truncated (a copy cut short, a full
    disk) or replaced is named before training starts rather than hours into an epoch.
    """
    files = [paths.shard(split, i) for i in range(len(shard_bytes))]
    for path, expected in zip(files, shard_bytes):
        if not path.is_file():
            raise LmtrainError(f"data: shard {path} is missing; run `lmtrain prepare --force` to rebuild {paths.root}")
        size = path.stat().st_size
        if size != expected:
            raise LmtrainError(
                f"data: shard {path} is {size} bytes but prepare wrote {expected} (truncated or changed); "
                f"run `lmtrain prepare --force` to rebuild {paths.root}"
            )
    return files


def damaged_shard_error(files: Sequence[Path], exc: tf.errors.OpError) -> LmtrainError:
    """The error to raise when reading a split failed: it names the shard at fault.

    The pipeline's own message does not say which file it was reading, so on this (rare) path
    each shard is read again on its own, with TFRecord's checksums, until one fails.
    """
    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(str(path)):
                pass
        except tf.errors.OpError as bad:
            return LmtrainError(f"data: shard {path} is corrupted ({first_line(bad, 160)}); run `lmtrain "
                                "prepare --force`")
    return LmtrainError(f"data: reading the shards failed ({first_line(exc, 160)}); run `lmtrain prepare --force`")


def num_windows(tokens: int, seq_len: int) -> int:
    """How many windows `windows()` yields for a split of `tokens` ids."""
    return math.ceil(tokens / seq_len)


def windows(files: Sequence[Path], seq_len: int) -> tf.data.Dataset:
    """(inputs [T] int32, targets [T] int32, mask [T] float32) for consecutive windows of a stream."""
    return _windows(_ids(files), seq_len)


def stream_rows(files: Sequence[Path], tokens: int, rows: int, seq_len: int, full_only: bool) -> tf.data.Dataset:
    """Batches [rows, T] for stateful (truncated-BPTT) training and evaluation.

    The split's stream is cut into `rows` contiguous parts, one per batch row, and batch k holds
    window k of every part; so the LSTM state at the end of batch k is the right start for
    batch k+1, row by row (the layout of the classic PTB setups). `full_only` (training) keeps
    whole windows and drops the stream's tail; otherwise (evaluation) every token is predicted
    once and what is left over is padded and masked.
    """
    predicted = tokens - 1
    length = predicted // rows if full_only else math.ceil(predicted / rows)  # inputs per row
    count = length // seq_len if full_only else math.ceil(length / seq_len)  # windows per row
    blank = (tf.zeros([seq_len], tf.int32), tf.zeros([seq_len], tf.int32), tf.zeros([seq_len], tf.float32))

    def row(index: tf.Tensor) -> tf.data.Dataset:
        ids = _ids(files, start=index * length).take(length + 1)  # its inputs and one more target
        # A row cut short by the end of the stream is padded with masked windows, so every row
        # yields `count` windows and the round robin below stays in step.
        return _windows(ids, seq_len).concatenate(tf.data.Dataset.from_tensors(blank).repeat()).take(count)

    # One pipeline whose rows are read in turn, a window each: window k of every row, then k+1.
    # (A pipeline per row, zipped, cost 70 ms per row to start: 4.5 s before 64 streams scored.)
    rounds = tf.data.Dataset.range(rows).interleave(row, cycle_length=rows, block_length=1)
    return rounds.batch(rows)


# Streams for scoring are cut from the split's ids in memory up to this many ids (64 MB of
# int32); a larger split is read by `stream_rows`, whose per-element pipeline is bounded in memory
# but slower (0.7x the model's own rate at the demo's shapes).
IN_MEMORY_TOKENS = 16 << 20


def stream_batches(files: Sequence[Path], tokens: int, rows: int, seq_len: int
                   ) -> Iterator[tuple[np.ndarray | tf.Tensor, np.ndarray | tf.Tensor, np.ndarray | tf.Tensor]]:
    """The batches of `stream_rows(..., full_only=False)`, in the same order and layout: each of
    `rows` contiguous parts of the stream is a row, batch k holds window k of every row, every
    token but the first is predicted once, and what is left over is padded and masked.

    Up to `IN_MEMORY_TOKENS` the split's ids are read once and the windows sliced from them;
    beyond, `stream_rows` reads them.
    """
    if tokens > IN_MEMORY_TOKENS:
        yield from stream_rows(files, tokens, rows, seq_len, full_only=False).prefetch(2)
        return
    ids = read_ids(files, tokens)
    predicted = len(ids) - 1
    length = math.ceil(predicted / rows)  # inputs per row
    starts = np.arange(rows)[:, None] * length  # (R, 1)
    for lo in range(0, length, seq_len):
        offset = np.arange(lo, lo + seq_len)[None, :]  # (1, T)
        at = starts + offset  # (R, T): positions of the inputs
        valid = (offset < length) & (at < predicted)
        inputs = np.where(valid, ids[np.minimum(at, predicted)], 0).astype(np.int32)
        targets = np.where(valid, ids[np.minimum(at + 1, predicted)], 0).astype(np.int32)
        yield inputs, targets, valid.astype(np.float32)


def read_ids(files: Sequence[Path], tokens: int) -> np.ndarray:
    """The first `tokens` ids of a split as one int32 array (records checked as TFRecord reads them)."""
    out = np.empty(tokens, dtype=np.int32)
    at = 0
    for record in tf.data.TFRecordDataset([str(f) for f in files]):
        part = np.frombuffer(record.numpy(), dtype="<i4")[:tokens - at]
        out[at:at + len(part)] = part
        at += len(part)
        if at == tokens:
            break
    return out[:at]


def stream_windows_per_row(tokens: int, rows: int, seq_len: int) -> int:
    """Training steps per epoch of `stream_rows(..., full_only=True)`."""
    return ((tokens - 1) // rows) // seq_len


def _ids(files: Sequence[Path], start: int = 0) -> tf.data.Dataset:
    """The split's ids one by one from position `start`, skipping whole records cheaply (every
    record but the split's last holds exactly RECORD_TOKENS ids) and cutting the first record
    read, rather than skipping its ids one element at a time (64 streams of a split did that
    for 2M elements, and the reader became the slowest part of scoring)."""
    ds = tf.data.TFRecordDataset([str(f) for f in files])
    ds = ds.skip(start // shards.RECORD_TOKENS)
    offset = start % shards.RECORD_TOKENS

    def decode(index: tf.Tensor, record: tf.Tensor) -> tf.Tensor:
        ids = tf.io.decode_raw(record, tf.int32, little_endian=True)
        return ids[tf.where(index == 0, offset, 0):]

    return ds.enumerate().map(decode, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def _windows(ids: tf.data.Dataset, seq_len: int) -> tf.data.Dataset:
    chunks = ids.batch(seq_len)
    # An empty sentinel after the last chunk lets the scan below emit that chunk too.
    chunks = chunks.concatenate(tf.data.Dataset.from_tensors(tf.zeros([0], tf.int32)))

    def pair(prev: tf.Tensor, cur: tf.Tensor) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
        # Targets of `prev` are its own ids shifted by one plus the first id of the next chunk.
        return cur, (prev, tf.concat([prev[1:], cur[:1]], axis=0))

    pairs = chunks.scan(tf.zeros([0], tf.int32), pair)
    pairs = pairs.filter(lambda x, y: tf.size(x) > 0)  # the first pair has no inputs

    def pad(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        mask = tf.sequence_mask(tf.size(y), seq_len, dtype=tf.float32)
        x = tf.pad(x, [[0, seq_len - tf.size(x)]])
        y = tf.pad(y, [[0, seq_len - tf.size(y)]])
        return tf.ensure_shape(x, [seq_len]), tf.ensure_shape(y, [seq_len]), tf.ensure_shape(mask, [seq_len])

    return pairs.map(pad, num_parallel_calls=tf.data.AUTOTUNE)


def train_dataset(
    files: Sequence[Path], seq_len: int, batch_size: int, epochs: int, shuffle_buffer: int, seed: int
) -> tf.data.Dataset:
    """Shuffled full batches, `epochs` times over; epoch e is steps [e*spe, (e+1)*spe)."""
    ds = windows(files, seq_len)
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.repeat(epochs).prefetch(tf.data.AUTOTUNE)


def eval_dataset(files: Sequence[Path], seq_len: int, batch_size: int) -> tf.data.Dataset:
    """Every window in order, the last batch possibly smaller; nothing dropped."""
    return windows(files, seq_len).batch(batch_size).prefetch(tf.data.AUTOTUNE)
