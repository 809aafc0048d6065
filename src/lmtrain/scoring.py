"""Scoring with the exact full softmax: the total NLL of a prepared split, of one text, or of
each of many texts batched together.

`fit`'s validation, `lmtrain eval` and the Python API's `score` / `evaluate` all score through
these functions, so their numbers agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from lmtrain.data.records import damaged_shard_error, eval_dataset, stream_batches
from lmtrain.data.tokenizer import EOS_ID, UNK_ID
from lmtrain.errors import LmtrainError
from lmtrain.model import LanguageModel
from lmtrain.progress import progress_bar

SCORE_CHUNK = 1024  # tokens scored per call when the state is carried through a text


def perplexity(nats_per_token: float) -> float:
    """exp(loss), infinite rather than an OverflowError for a diverged model."""
    return math.exp(nats_per_token) if nats_per_token < 709.0 else math.inf


# A stream starts from a zero state and needs a few dozen tokens before its state is worth
# anything: with streams of at least this many tokens that start costs under 0.1% of perplexity
# (a zero state every 20 tokens cost 6-8% on Penn Treebank).
MIN_STREAM_TOKENS = 2048
# At least this many tokens per call when the state is carried: a call costs a fixed overhead
# that small models and small batches (PTB's 20 x 20) would otherwise pay per 400 tokens.
MIN_CALL_TOKENS = 4096


@dataclass(frozen=True)
class SplitScore:
    """The exact full-softmax NLL of a split (float64 sums), and how it was read."""

    nll: float  # total, in nats
    tokens: float  # predicted tokens
    unk_nll: float  # of `nll`, the part at `<unk>` targets (out-of-vocabulary words)
    unk_tokens: float  # predicted tokens that are `<unk>`
    streams: int | None  # the state carried through this many contiguous streams; None: zero-state windows
    window: int  # tokens per stream (or per window) a call reads
    unigram_nll: float | None = None  # of the same tokens under `split_nll`'s `prior` (None: not asked)

    @property
    def how(self) -> str:
        """How the split was read, as the output lines name it."""
        if self.streams is None:
            return f"windows of {self.window} tokens from a zero state"
        return f"state carried through {self.streams} stream(s)"


def eval_layout(split_tokens: int, seq_len: int, batch_size: int) -> tuple[int, int]:
    """(streams, window) for scoring a split with the state carried.

    The split is cut into at most `batch_size` contiguous streams of at least
    `MIN_STREAM_TOKENS` tokens, read side by side; a call reads `window` tokens of each, so that
    it scores at least the `batch_size` x `seq_len` tokens zero-state windows do (and at least
    `MIN_CALL_TOKENS`; memory stays bounded, the softmax works in blocks).
    """
    streams = max(1, min(batch_size, split_tokens // MIN_STREAM_TOKENS))
    return streams, max(seq_len, math.ceil(max(batch_size * seq_len, MIN_CALL_TOKENS) / streams))


def split_nll(model: LanguageModel, files: list[Path], seq_len: int, batch_size: int, split_tokens: int,
              windows: bool = False, progress: bool = False, max_tokens: int | None = None,
              should_stop: Callable[[], bool] | None = None, label: str = "eval",
              prior: np.ndarray | None = None) -> SplitScore:
    """The exact NLL of a prepared split of `split_tokens` ids (`SplitScore`).

    By default the split is read as the contiguous streams of `eval_layout`, with the LSTM state
    carried from call to call, as published language-model results are scored (the whole split
    as one text, state carried). `windows` scores every window of `seq_len` tokens from a zero
    state instead (`batch_size` of them at once): what a model trained on shuffled windows saw
    in training, and worse by the context it lacks.

    `max_tokens` scores the split's first that many predicted tokens (zero-state windows: the
    first calls that reach that many), the same each time, so capped validations stay
    comparable. The progress bar is titled `label`. `should_stop` is asked after every call (one
    takes about a second even at V = 100k): when it
    says yes the sums so far are returned at once, and the caller, which knows why it asked,
    decides what they are worth.

    `prior`: log-probabilities [V] of a model with no context (the training unigram): its NLL of
    the same tokens comes back as `unigram_nll`, the floor a trained model must be below.
    """
    sequence_nll = model.compiled_sequence_nll()
    if windows:
        streams, window = None, seq_len
        batches = iter(eval_dataset(files, seq_len, batch_size))
    else:
        # Capped: the split's first max_tokens predictions exactly, cut into streams of their own.
        read = split_tokens if max_tokens is None else min(split_tokens, max_tokens + 1)
        streams, window = eval_layout(read, seq_len, batch_size)
        batches = stream_batches(files, read, streams, window)
        state = model.zero_state(streams)
    total = count = unk_total = unk_count = prior_total = 0.0
    goal = min(x for x in (max_tokens, split_tokens, math.inf) if x is not None)
    with progress_bar(desc=label, total=None if math.isinf(goal) else goal, unit="tok",
                      unit_scale=True, disable=not progress, leave=False) as bar:
        while max_tokens is None or count < max_tokens:
            try:
                tokens, targets, mask = next(batches)
            except StopIteration:
                break
            except tf.errors.OpError as exc:
                raise damaged_shard_error(files, exc) from None
            if windows:
                state = model.zero_state(tf.shape(tokens)[0])
            nll, state = sequence_nll(tokens, targets, state)  # (B, T)
            nll, mask, targets = nll.numpy().astype(np.float64), np.asarray(mask), np.asarray(targets)
            unk = (targets == UNK_ID) & (mask > 0)
            total += float((nll * mask).sum())
            count += float(mask.sum())
            unk_total += float(nll[unk].sum())
            unk_count += float(unk.sum())
            if prior is not None:
                prior_total -= float((prior[targets].astype(np.float64) * mask).sum())
            bar.update(float(mask.sum()))
            if should_stop is not None and should_stop():
                break
    if count == 0:
        raise LmtrainError("the split to evaluate holds no tokens")
    return SplitScore(total, count, unk_total, unk_count, streams, window,
                      prior_total if prior is not None else None)


def score_ids(model: LanguageModel, ids: list[int]) -> np.ndarray:
    """Natural-log probability of each id given every id before it, the first given `</s>`.

    The text is read as one document, as if it followed another in a split, and with the LSTM
    state carried across the whole of it (in chunks of `SCORE_CHUNK`, so memory stays bounded),
    as `split_nll` reads a split by default.
    """
    fn = model.compiled_sequence_nll()
    stream = np.asarray([EOS_ID] + list(ids), dtype=np.int32)
    state = model.zero_state(1)
    parts = []
    for lo in range(0, len(ids), SCORE_CHUNK):
        hi = min(lo + SCORE_CHUNK, len(ids))
        nll, state = fn(stream[None, lo:hi], stream[None, lo + 1:hi + 1], state)
        parts.append(nll.numpy()[0])
    return -np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


class BatchScorer:
    """Total log-probability of each of many texts, scored together as one padded batch.

    Each text is given as its ids ending with `</s>` (`Tokenizer.encode_document`) and is read
    as `score_ids` reads it: from `</s>`, the state carried through it in chunks of
    `SCORE_CHUNK` positions. Only the positions that hold a token reach the full softmax (the
    padding is dropped before it, where the time goes), so a batch of mixed lengths costs about
    what its tokens cost. One compiled function serves every batch shape.
    """

    def __init__(self, model: LanguageModel) -> None:
        self._model = model
        ids = tf.TensorSpec([None, None], tf.int32)
        self._fn = tf.function(self._masked_nll, input_signature=[ids, ids, tf.TensorSpec([None], tf.int32),
                                                                  model.state_spec()])

    def _masked_nll(self, tokens: tf.Tensor, targets: tf.Tensor, lengths: tf.Tensor, state: Any
                    ) -> tuple[tf.Tensor, Any]:
        hidden, new_state = self._model(tokens, training=False, initial_state=state, return_state=True)  # (B, T, D)
        mask = tf.sequence_mask(lengths, tf.shape(tokens)[1])  # (B, T)
        nll = self._model.full_nll(tf.boolean_mask(hidden, mask), tf.boolean_mask(targets, mask))  # (N,) row-major
        return nll, new_state

    def log_probs(self, texts: Sequence[np.ndarray]) -> np.ndarray:
        """Sum of natural-log probabilities of each text's ids (float64), in the order given."""
        rows = len(texts)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=rows)
        longest = int(lengths.max()) if rows else 0
        stream = np.zeros((rows, longest + 1), dtype=np.int32)  # </s>, then the ids, then padding
        stream[:, 0] = EOS_ID
        for row, ids in enumerate(texts):
            stream[row, 1:len(ids) + 1] = ids
        totals = np.zeros(rows, dtype=np.float64)
        state = self._model.zero_state(rows)
        for lo in range(0, longest, SCORE_CHUNK):
            hi = min(lo + SCORE_CHUNK, longest)
            valid = np.clip(lengths - lo, 0, hi - lo)
            nll, state = self._fn(stream[:, lo:hi], stream[:, lo + 1:hi + 1], valid.astype(np.int32), state)
            totals -= np.bincount(np.repeat(np.arange(rows), valid), weights=nll.numpy().astype(np.float64),
                                  minlength=rows)
        return totals
