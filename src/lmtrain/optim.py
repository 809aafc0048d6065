"""The optimizer `fit` uses: Adam that keeps sparse gradients sparse ("lazy Adam").

Under sampled softmax the gradients of the [V, H] output matrix, its bias and the [V, E]
embedding are `tf.IndexedSlices` touching only B*T + num_sampled rows. Keras 3 `Adam` densifies
them (`gradient - m` is dense), so every step rewrites all V x D weights and both moment slots:
at V = 100k that costs several times the LSTM itself (keras-team/keras#19992; measured in
shared/DESIGN-NOTES.md). `LazyAdam` applies the Adam update to the touched rows only: it reads
their moments with a resource gather and writes moments and weights back with scatter ops.
Dense gradients (the LSTM weights) get Keras' own Adam update unchanged.

The maths differs from dense Adam in one way, as in TF Addons' LazyAdam: rows absent from a
step keep their moments instead of decaying them, and receive no update from stale momentum.

Gradient clipping is done in `LanguageModel.train_step` with `tf.clip_by_global_norm`, which
keeps `IndexedSlices` sparse; Keras' `global_clipnorm` would densify them.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from lmtrain.config import TrainConfig


class LazyAdam(keras.optimizers.Adam):
    """Adam whose updates from `IndexedSlices` gradients read and write only the touched rows."""

    def update_step(self, gradient: Any, variable: keras.Variable, learning_rate: Any) -> None:
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        if self.amsgrad:
            raise ValueError("LazyAdam does not support amsgrad")
        dtype = variable.dtype
        rows, grad = _sum_duplicates(gradient)  # (R,), (R, ...) with R unique rows
        grad = tf.cast(grad, dtype)
        lr = tf.cast(learning_rate, dtype)
        t = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, t)) / (1 - tf.pow(beta_1, t))

        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        # `.value` is the backend tf.Variable: gathering from it is a ResourceGather of R rows,
        # where gathering from the Keras variable would read all V rows first.
        m_rows = beta_1 * tf.gather(m.value, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v.value, rows) + (1 - beta_2) * tf.square(grad)
        # IndexedSlices values make Keras' TF backend use scatter_update / scatter_sub.
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def _sum_duplicates(grad: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor]:
    """Unique row indices and the summed gradient of each (a token seen twice counts twice)."""
    rows, position = tf.unique(grad.indices)
    summed = tf.math.unsorted_segment_sum(grad.values, position, tf.shape(rows)[0])
    return rows, summed


def create_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """`train.optimizer`: lazy_adam (row-sparse, the default) or adam (Keras' dense Adam).

    Under mixed_float16 the optimizer is wrapped for dynamic loss scaling (float16 gradients
    underflow without it); bfloat16 has float32's range and needs none.
    """
    if config.optimizer == "adam":
        optimizer: keras.optimizers.Optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    else:
        optimizer = LazyAdam(learning_rate=config.learning_rate)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
