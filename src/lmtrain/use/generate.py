"""`lmtrain generate`: sample text from a prompt with incremental (stateful) decoding, in the graph.

The prompt is run through the LSTM once; after that every new token costs one LSTM step, since
each layer's (h, c) is carried from step to step (re-running the whole prefix per token would be
quadratic in the length of the text). Prompt, sampling (temperature, top-k, top-p, seed) and
the loop run inside one compiled function, for N streams at once (`num_samples`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from lmtrain.data.tokenizer import EOS_ID, Tokenizer
from lmtrain.errors import LmtrainError
from lmtrain.model import LanguageModel


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int = 200
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    seed: int = 0
    ignore_eos: bool = False  # go on past the end of a document (for benchmarks): always max_tokens

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise LmtrainError(f"--max-tokens: must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise LmtrainError(f"--temperature: must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k < 0:
            raise LmtrainError(f"--top-k: must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise LmtrainError(f"--top-p: must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str  # prompt and continuation, decoded together (so a word split across them joins)
    tokens: int  # generated
    lstm_steps: int  # one-token LSTM steps after the prompt: one per generated token but the last
    tokens_processed: int  # ids run through the LSTM in all: prompt + generated, not quadratic
    stopped_at_eos: bool
    seconds: float  # for the whole call (all streams of a `num_samples` batch together)

    def __str__(self) -> str:
        return self.text


def generate_text(model: LanguageModel, tokenizer: Tokenizer, prompt: str, options: SamplingOptions,
                  num_samples: int = 1) -> list[Generation]:
    """Continue `prompt` `num_samples` times, as one batch (what `lmtrain generate` and the
    Python API run)."""
    if num_samples < 1:
        raise LmtrainError(f"--num-samples: must be >= 1, got {num_samples}")
    started = time.perf_counter()
    prompt_ids = tokenizer.encode_text(prompt) if prompt else []
    streams = sample(model, prompt_ids, options, num_samples)
    seconds = time.perf_counter() - started
    # An empty prompt is run as </s>, one id.
    processed = max(len(prompt_ids), 1)
    return [Generation(prompt, tokenizer.decode(prompt_ids + ids), len(ids), steps, processed + steps, eos, seconds)
            for ids, steps, eos in streams]


def sample(model: LanguageModel, prompt_ids: list[int], options: SamplingOptions, num_samples: int = 1
           ) -> list[tuple[list[int], int, bool]]:
    """For each of `num_samples` streams: generated ids, one-token LSTM steps run after the
    prompt, and whether `</s>` was reached. One call of the compiled decoder does it all."""
    # An empty prompt starts a new document, which is what follows `</s>` in training data.
    context = tf.constant([prompt_ids or [EOS_ID]] * num_samples, dtype=tf.int32)  # (N, P)
    tokens, lengths, steps = decoder(model)(
        context, tf.constant(options.max_tokens), tf.constant(options.temperature, tf.float32),
        tf.constant(options.top_k), tf.constant(options.top_p, tf.float32),
        tf.constant(options.seed, tf.int64), tf.constant(options.ignore_eos))
    tokens, lengths, steps = tokens.numpy().T, lengths.numpy(), int(steps)  # tokens: (N, T)
    out = []
    for row, n in zip(tokens, lengths):
        eos = int(n) < options.max_tokens and not options.ignore_eos
        # A stream that ended before the last one stopped running no more steps of its own.
        out.append((row[:n].tolist(), min(steps, int(n) - (0 if eos else 1)), eos))
    return out


def decoder(model: LanguageModel) -> Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """The whole generation as one compiled function, traced once per model:

        (prompt [N, P], max_tokens, temperature, top_k, top_p, seed, ignore_eos)
            -> (tokens [T, N] for T <= max_tokens, lengths [N], steps)

    The prompt runs through the LSTM once, then a `tf.while_loop` samples a token per stream
    and runs one LSTM step on it with the state carried, until `max_tokens` or until every
    stream has reached `</s>`. Nothing goes back to Python between tokens (one round trip per
    token was most of the cost at small vocabularies). Draws use stateless random ops keyed by
    (seed, token index): the same seed gives the same text.
    """
    return model.compiled_fn("decode", lambda: _decoder(model))


def _decoder(model: LanguageModel) -> Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    scalar = tf.TensorSpec([], tf.int32)
    number = tf.TensorSpec([], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32), scalar, number, scalar, number,
                                  tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.bool)])
    def decode(prompt, max_tokens, temperature, top_k, top_p, seed, ignore_eos):  # type: ignore[no-untyped-def]
        streams = tf.shape(prompt)[0]
        output_t = model.output_transposed()  # (H, V), once per generation
        log_probs, state = model.step(prompt, model.zero_state(streams), output_t)  # (N, V)

        def body(i, log_probs, state, done, lengths, out):  # type: ignore[no-untyped-def]
            token = pick(log_probs, temperature, top_k, top_p, tf.stack([seed, tf.cast(i, tf.int64)]))
            ended = tf.logical_and(tf.equal(token, EOS_ID), tf.logical_not(ignore_eos))
            lengths += tf.cast(tf.logical_not(tf.logical_or(done, ended)), tf.int32)
            done = tf.logical_or(done, ended)
            out = out.write(i, token)
            # The last token needs no distribution after it.
            log_probs, state = tf.cond(
                tf.logical_and(i + 1 < max_tokens, tf.logical_not(tf.reduce_all(done))),
                lambda: model.step(token[:, None], state, output_t), lambda: (log_probs, state))
            return i + 1, log_probs, state, done, lengths, out

        def running(i, log_probs, state, done, lengths, out):  # type: ignore[no-untyped-def]
            return tf.logical_and(i < max_tokens, tf.logical_not(tf.reduce_all(done)))

        zeros = tf.zeros([streams], tf.int32)
        i, _, _, _, lengths, out = tf.while_loop(
            running, body, (tf.constant(0), log_probs, state, tf.zeros([streams], tf.bool), zeros,
                            tf.TensorArray(tf.int32, size=max_tokens)))
        # (i, N), time-major: an int32 transpose on the device would make oneDNN print a notice
        # at run time (it is done on the host instead, by the caller)
        return out.stack()[:i], lengths, tf.maximum(i - 1, 0)

    return decode


def pick(log_probs: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor, seed: tf.Tensor
         ) -> tf.Tensor:
    """One id per row of log-probabilities [N, V]: greedy when temperature is 0, else a draw
    at that temperature from the top-k (0: all) and top-p (1: all) cut, keyed by `seed` [2]."""
    vocab = tf.shape(log_probs)[1]
    logits = log_probs / tf.maximum(temperature, 1e-6)
    logits = tf.cond(tf.logical_and(top_k > 0, top_k < vocab), lambda: _top_k(logits, top_k), lambda: logits)
    drawn = tf.cond(top_p < 1.0, lambda: _nucleus_draw(logits, top_p, seed),
                    lambda: tf.cast(tf.random.stateless_categorical(logits, 1, seed)[:, 0], tf.int32))
    greedy = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0, drawn, greedy)


def _top_k(logits: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    kth = tf.math.top_k(logits, k, sorted=True).values[:, -1:]  # (N, 1)
    return tf.where(logits < kth, -np.inf, logits)


def _nucleus_draw(logits: tf.Tensor, top_p: tf.Tensor, seed: tf.Tensor, rounds: int = 16) -> tf.Tensor:
    """One id per row drawn from the nucleus (`_top_p`) of logits [N, V], without sorting.

    By rejection: draw from the whole distribution and keep the draw if the ids strictly
    likelier than it hold less than `top_p` of the mass (exactly the nucleus's members); else
    draw again. A kept draw is a draw from the distribution restricted to the nucleus, and a
    round costs two O(V) passes, where finding the nucleus needs a sort of all V whenever the
    likeliest few hundred ids hold too little mass (0.6 ms at V = 8k per token here, most of a
    token's time). About 1 / top_p rounds are needed; rows still refused after `rounds` take
    the sorted cut (`_top_p`).
    """
    probs = tf.nn.softmax(logits)  # (N, V)
    rows = tf.shape(probs)[0]

    def attempt(r, token, accepted):  # type: ignore[no-untyped-def]
        draw = tf.cast(tf.random.stateless_categorical(
            logits, 1, tf.random.experimental.stateless_fold_in(seed, r))[:, 0], tf.int32)  # (N,)
        p = tf.gather(probs, draw[:, None], batch_dims=1)  # (N, 1)
        likelier = tf.reduce_sum(tf.where(probs > p, probs, 0.0), axis=1)  # (N,)
        token = tf.where(accepted, token, draw)
        return r + 1, token, tf.logical_or(accepted, likelier < top_p)

    _, token, accepted = tf.while_loop(
        lambda r, token, accepted: tf.logical_and(r < rounds, tf.logical_not(tf.reduce_all(accepted))), attempt,
        (tf.constant(0), tf.zeros([rows], tf.int32), tf.zeros([rows], tf.bool)))
    return tf.cond(tf.reduce_all(accepted), lambda: token, lambda: tf.where(accepted, token, tf.cast(
        tf.random.stateless_categorical(_top_p(logits, top_p), 1, seed)[:, 0], tf.int32)))


def _top_p(logits: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keep the smallest set of likeliest ids whose mass reaches `top_p` (the nucleus); ties at
    its edge are kept. It sorts all V, so decoding uses it only for the rows that rejection
    (`_nucleus_draw`) did not settle."""
    probs = tf.nn.softmax(logits)
    ranked = tf.sort(probs, axis=1, direction="DESCENDING")  # (N, V)
    before = tf.cumsum(ranked, axis=1, exclusive=True)  # mass of the ids ranked above each
    count = tf.maximum(tf.reduce_sum(tf.cast(before < top_p, tf.int32), 1), 1)  # nucleus size per row
    threshold = tf.gather(ranked, count - 1, batch_dims=1)[:, None]  # (N, 1): its smallest probability
    return tf.where(probs < threshold, -np.inf, logits)
