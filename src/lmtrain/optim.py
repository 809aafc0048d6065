"""The optimizer `fit` uses.

Gradient clipping is done in `LanguageModel.train_step` with `tf.clip_by_global_norm`, which
keeps `IndexedSlices` sparse; Keras' own `global_clipnorm` would densify them.
"""

from __future__ import annotations

import keras

from lmtrain.config import TrainConfig


def create_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam at the configured learning rate."""
    return keras.optimizers.Adam(learning_rate=config.learning_rate)
