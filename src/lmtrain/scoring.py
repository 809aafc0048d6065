"""Scoring with the exact full softmax: the total NLL of a prepared split, of one text, or of
each of many texts batched together.

`fit`'s validation, `lmtrain eval` and the Python API's `score` / `evaluate` all score through
these functions, so their numbers agree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from lmtrain.errors import LmtrainError
from lmtrain.model import LanguageModel
from lmtrain.progress import progress_bar
from lmtrain.records import damaged_shard_error, eval_dataset, stream_rows
from lmtrain.tokenizer import EOS_ID

SCORE_CHUNK = 1024  # tokens scored per call when the state is carried through a text


def perplexity(nats_per_token: float) -> float:
    """exp(loss), infinite rather than an OverflowError for a diverged model."""
    return math.exp(nats_per_token) if nats_per_token < 709.0 else math.inf


def split_nll(model: LanguageModel, files: list[Path], seq_len: int, batch_size: int,
              progress: bool = False, stream_tokens: int | None = None, max_tokens: int | None = None,
              total_tokens: int | None = None, should_stop: Callable[[], bool] | None = None,
              label: str = "eval") -> tuple[float, float]:
    """(total exact NLL in nats, number of predicted tokens) over a split, in float64.

    By default every window of `seq_len` starts from a zero state. With `stream_tokens` (the
    split's token count; `train.stateful`), the split is read as `batch_size` contiguous rows
    and the state is carried from window to window, as in stateful training.

    `max_tokens` stops after the batch that reaches that many predicted tokens (always the same
    first batches, so capped validations stay comparable). `total_tokens` (the split's size)
    gives the progress bar (titled `label`) its end. `should_stop` is asked after every batch (one batch takes
    about a second even at V = 100k): when it says yes the sums so far are returned at once, and
    the caller, which knows why it asked, decides what they are worth.
    """
    if stream_tokens is None:
        nll_sum = model.compiled_nll_sum()
        batches = iter(eval_dataset(files, seq_len, batch_size))
    else:
        sequence_nll = model.compiled_sequence_nll()
        batches = iter(stream_rows(files, stream_tokens, batch_size, seq_len, full_only=False).prefetch(2))
        state = model.zero_state(batch_size)
    total = count = 0.0
    goal = min(x for x in (max_tokens, total_tokens, math.inf) if x is not None)
    with progress_bar(desc=label, total=None if math.isinf(goal) else goal, unit="tok",
              unit_scale=True, disable=not progress, leave=False) as bar:
        while max_tokens is None or count < max_tokens:
            try:
                tokens, targets, mask = next(batches)
            except StopIteration:
                break
            except tf.errors.OpError as exc:
                raise damaged_shard_error(files, exc) from None
            if stream_tokens is None:
                s, c = nll_sum(tokens, targets, mask)
            else:
                nll, state = sequence_nll(tokens, targets, state)
                s, c = tf.reduce_sum(nll * mask), tf.reduce_sum(mask)
            total += float(s)
            count += float(c)
            bar.update(float(c))
            if should_stop is not None and should_stop():
                break
    if count == 0:
        raise LmtrainError("the split to evaluate holds no tokens")
    return total, count


def score_ids(model: LanguageModel, ids: list[int]) -> np.ndarray:
    """Natural-log probability of each id given every id before it, the first given `</s>`.

    The text is read as one document, as if it followed another in a split, and with the LSTM
    state carried across the whole of it (in chunks of `SCORE_CHUNK`, so memory stays bounded);
    split evaluation instead starts every `train.seq_len` window from a zero state, so it sees
    less context and scores the same text slightly worse.
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
