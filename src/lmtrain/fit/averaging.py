"""Weight averaging for evaluation (`train.average`): the running mean of the weights over the
steps since averaging began, which is what averaged SGD (AWD-LSTM's NT-ASGD) evaluates.

Averaging starts at the first validation that does not improve on the best one (the
non-monotone trigger of Merity et al. 2017: the iterates have started to wander around a
minimum, and their mean sits nearer it than any one of them). From then on every step folds
the weights into the mean; validation scores the mean, and the checkpoints hold it beside the
trained weights, so `eval`, `generate` and `export` (through `lmtrain.use.load.load_run`) use it.
Training itself always continues from the trained weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import keras
import tensorflow as tf


class WeightAverage:
    """The mean of `variables` over the steps since `start`; inactive until then."""

    def __init__(self, variables: Sequence[keras.Variable]) -> None:
        self._variables = list(variables)
        self.means = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="mean") for v in self._variables]
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")
        self.active = tf.Variable(False, trainable=False, name="active")
        self._update = tf.function(self._fold)

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(count=self.count, active=self.active,
                                   **{f"mean_{i}": m for i, m in enumerate(self.means)})

    @property
    def started(self) -> bool:
        return bool(self.active.numpy())

    def start(self) -> None:
        """Begin averaging: the next `update` makes the mean the weights of that step."""
        self.active.assign(True)
        self.count.assign(0)

    def update(self) -> None:
        """Fold the current weights into the mean (a no-op before `start`)."""
        if self.started:
            self._update()

    def _fold(self) -> None:
        n = tf.cast(self.count + 1, tf.float32)
        for mean, v in zip(self.means, self._variables):
            mean.assign_add((tf.cast(v.value, mean.dtype) - mean) / tf.cast(n, mean.dtype))
        self.count.assign_add(1)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the variables hold the mean (when averaging has begun and folded a
        step); after it, the trained weights again."""
        if not self.started or int(self.count.numpy()) == 0:
            yield
            return
        saved = [tf.identity(v.value) for v in self._variables]
        for v, mean in zip(self._variables, self.means):
            v.assign(mean)
        try:
            yield
        finally:
            for v, value in zip(self._variables, saved):
                v.assign(value)
