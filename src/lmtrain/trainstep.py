"""The compiled training step exactly as `fit` runs it: the model and optimizer built in the
strategy's scope, and the step (`distribute.train_step`) compiled once. The benchmarks time
what this returns, so what they measure is what users train with. Kept apart from
`lmtrain.build`, which inference uses too, so loading a trained model never imports the
distributed machinery.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from lmtrain.build import create_model, create_optimizer
from lmtrain.config import Config
from lmtrain.distribute import Distribution, create_distribution
from lmtrain.distribute import train_step as distributed_step
from lmtrain.model import LanguageModel
from lmtrain.resolve import check_resolved


def build_trainer(config: Config, vocab_size: int, unigram_counts: list[int], total_steps: int = 1000,
                  distribution: Distribution | None = None,
                  ) -> tuple[LanguageModel, keras.optimizers.Optimizer, Callable[..., Any]]:
    """The model, optimizer and compiled train step exactly as `fit` runs them.

    `config` must be resolved (`lmtrain.resolve.resolve`). Under a strategy, the weights and
    optimizer slots are created in its scope (mirrored).
    """
    check_resolved(config, "build_trainer")
    distribution = distribution or create_distribution(config.train)
    keras.utils.set_random_seed(config.train.seed)
    with distribution.strategy.scope():
        model = create_model(config, vocab_size, unigram_counts)
        optimizer = create_optimizer(config.train, total_steps, config.model.hidden_dim)
        model.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)
    step_fn = tf.function(distributed_step(distribution, model), jit_compile=resolve_jit(config.train.jit_compile))
    return model, optimizer, step_fn


def resolve_jit(setting: str | bool) -> bool:
    """`train.jit_compile` as a bool. "auto" is off: on GPU, XLA would replace the cuDNN LSTM
    kernel (which cannot be compiled) with a slower loop, and on CPU it did not pay off here."""
    return setting is True
