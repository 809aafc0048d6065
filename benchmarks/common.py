"""What the micro-benchmarks share: the step's shapes as arguments, a synthetic Zipf vocabulary and
batch, the LSTM-alone floor step, and round-robin timing.

step_bench.py, lstm_bench.py and softmax_bench.py time the same shapes the same way; these are
their common pieces, so a change of method reaches all three.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf


def add_shape_arguments(p: argparse.ArgumentParser) -> None:
    """The step's shapes and the timing repeats (step_bench, lstm_bench and softmax_bench take them)."""
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=35)
    p.add_argument("--embedding-dim", type=int, default=256)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--num-sampled", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)


def synthetic_batch(counts: np.ndarray, batch_size: int, seq_len: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One (inputs, targets, mask) batch of ids drawn from the same Zipf law as the counts."""
    ids = np.random.default_rng(0).choice(counts.size, size=(batch_size, seq_len + 1),
                                          p=counts / counts.sum()).astype(np.int32)
    return tf.constant(ids[:, :-1]), tf.constant(ids[:, 1:]), tf.ones((batch_size, seq_len), tf.float32)


def shape_sections(vocab: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Config sections of a sampled model at `add_shape_arguments`' shapes (no dropout)."""
    return {
        "tokenizer": {"vocab_size": vocab},
        "model": {"embedding_dim": args.embedding_dim, "hidden_dim": args.hidden_dim, "num_layers": 1,
                  "dropout": 0.0, "softmax": "sampled", "num_sampled": args.num_sampled},
        "train": {"batch_size": args.batch_size, "seq_len": args.seq_len},
    }


def floor_step(model: Any, optimizer: Any, x: tf.Tensor) -> Callable[[], Any]:
    """(a): lmtrain's Embedding + LSTM and optimizer, no output layer."""
    variables = model.embedding.trainable_variables + [v for lstm in model.lstms for v in lstm.trainable_variables]

    @tf.function
    def step(tokens: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(tokens, training=True))
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, 1.0)
        optimizer.apply(grads, variables)
        return loss

    return lambda: step(x)


def zipf_counts(vocab: int) -> np.ndarray:
    """Unigram counts following Zipf's law (count proportional to 1/rank), in shuffled id order,
    as BPE ids are: the proposal must not rely on ids being sorted by frequency."""
    counts = np.floor(1e7 / np.arange(1, vocab + 1)).astype(np.int64) + 1
    np.random.default_rng(1).shuffle(counts)
    return counts


def round_robin(variants: dict[str, Callable[[], Any]], warmup: int, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, taking turns (so a noisy machine slows all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    for _ in range(reps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()  # each returns a host value: the work is finished
            times[name].append(time.perf_counter() - t0)
    return times
