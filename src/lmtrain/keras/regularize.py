"""The regularisers of LSTM language models (Merity et al. 2017, Gal & Ghahramani 2016) as
functions the layers and `lmtrain fit`'s model share: dropout masks that are the same however
many replicas a batch is spread over, and the activation penalties (AR / TAR).

Why masks are drawn here and not by `keras.layers.Dropout`: under `tf.distribute` a layer's
seed generator is mirrored, so every replica would draw the same mask for its own rows, and N
replicas would train differently from one device. `batch_dropout` draws the mask of the
*global* batch from the generator, exactly as one device draws it, and keeps this replica's
rows. A mask with no batch axis (the recurrent kernel's under weight drop, the vocabulary's
under word dropout) is simply drawn once: the same on every replica, as on one device.

Every mask comes from a Keras `SeedGenerator`, whose state is a variable of the layer: a
checkpoint that holds it (as `lmtrain fit`'s does) resumes with the masks an uninterrupted run
would have drawn.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


def _seed(generator: keras.random.SeedGenerator) -> tf.Tensor:
    """The next seed of `generator`, as Keras' TensorFlow backend draws and casts it."""
    seed = generator.next()
    if seed.dtype != tf.int32:
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return seed


def keep_mask(shape: Any, rate: float, generator: keras.random.SeedGenerator, dtype: Any = tf.float32) -> tf.Tensor:
    """A dropout scale of `shape` (0 or 1 / (1 - rate) per element) with no batch axis: the same
    on every replica.

    Each element is decided by one random byte (dropped below round(256 x rate), so the rate is
    kept to 1/256: 0.5 exactly), four to a 32-bit draw. Why: weight drop masks a whole [H, 4H]
    kernel every step, and a float uniform per element (`stateless_dropout`) cost 2.4x as much
    here, about 3% of a 2 x 650 step.
    """
    threshold = round(256 * rate)
    size = tf.reduce_prod(shape)
    words = tf.random.stateless_uniform([(size + 3) // 4], seed=_seed(generator), minval=None, maxval=None,
                                        dtype=tf.uint32)
    draws = tf.reshape(tf.bitcast(words, tf.uint8), [-1])[:size]
    scale = tf.constant(256.0 / (256 - threshold), dtype) if threshold < 256 else tf.constant(0.0, dtype)
    return tf.reshape(tf.where(draws >= threshold, scale, tf.zeros([], dtype)), shape)


def batch_dropout(x: tf.Tensor, rate: float, generator: keras.random.SeedGenerator, locked: bool = False
                  ) -> tf.Tensor:
    """Dropout on x [B, T, D] (or [B, D]) in training: one mask element per value, or with
    `locked` one per sequence and feature, shared by every time step (variational dropout).

    The mask is the global batch's (this replica's B rows of N*B), so a batch spread over N
    replicas is dropped as one device drops it.
    """
    if rate == 0:
        return x
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    rows = tf.shape(x)[0]
    shape = tf.unstack(tf.shape(x))
    shape[0] = rows * replicas
    if locked and x.shape.rank == 3:
        shape[1] = 1
    # A float uniform per element, as Keras' Dropout draws it: on one device, unlocked dropout is
    # Keras' layer itself, and N replicas must draw what it draws.
    scale = tf.nn.experimental.stateless_dropout(tf.ones(tf.stack(shape), x.dtype), rate=rate, seed=_seed(generator))
    if replicas > 1:
        first = ctx.replica_id_in_sync_group * rows
        scale = scale[first:first + rows]
    return x * scale


def activation_penalty(dropped: tf.Tensor, raw: tf.Tensor, ar: float, tar: float, weights: tf.Tensor | None = None,
                       count: tf.Tensor | float | None = None) -> tf.Tensor:
    """Activation regularisation (AR: `ar` times the mean square of the dropped outputs) and
    temporal activation regularisation (TAR: `tar` times the mean square of the change of the
    undropped outputs from one step to the next), for outputs [B, T, D], as AWD-LSTM defines them.

    Means are over features, then over the positions `weights` [B, T] marks (all, by default),
    summed and divided by `count` (default: the marked positions): pass the global batch's
    token count under tf.distribute so replicas' penalties add up to one device's.
    """
    total = tf.constant(0.0, tf.float32)
    if weights is None:
        weights = tf.ones(tf.shape(raw)[:2], tf.float32)
    weights = tf.cast(weights, tf.float32)
    count = tf.reduce_sum(weights) if count is None else count
    count = tf.maximum(tf.cast(count, tf.float32), 1.0)
    if ar:
        square = tf.reduce_mean(tf.square(tf.cast(dropped, tf.float32)), -1)  # (B, T)
        total += ar * tf.reduce_sum(square * weights) / count
    if tar:
        raw = tf.cast(raw, tf.float32)
        change = tf.reduce_mean(tf.square(raw[:, 1:] - raw[:, :-1]), -1)  # (B, T-1)
        total += tar * tf.reduce_sum(change * weights[:, 1:]) / count
    return total


def check_rate(name: str, rate: float) -> float:
    """A dropout rate in [0, 1), or a ValueError naming the argument."""
    if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"{name} must be a rate in [0, 1); got {rate!r}")
    return float(rate)


def check_penalty(name: str, value: float) -> float:
    """A penalty weight >= 0, or a ValueError naming the argument."""
    if not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0; got {value!r}")
    return float(value)
