"""The training step exactly as `fit` runs it: the model, the optimizer and the step
(`lmtrain.fit.step.TrainStep`) built in the strategy's scope, and the step compiled once
(`lmtrain.fit.distribute.train_step`). The benchmarks time what this returns, so what they
measure is what users train with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import keras
import tensorflow as tf

from lmtrain.build import create_model, create_optimizer, training_loss
from lmtrain.config.resolve import check_resolved
from lmtrain.config.schema import Config
from lmtrain.fit.distribute import Distribution, create_distribution
from lmtrain.fit.distribute import train_step as distributed_step
from lmtrain.fit.step import TrainStep
from lmtrain.model import LanguageModel


@dataclass
class Trainer:
    """What `build_trainer` builds: the model, its optimizer, the step and its compiled form."""

    model: LanguageModel
    optimizer: keras.optimizers.Optimizer
    step: TrainStep
    train_fn: Callable[..., Any]  # the compiled step: a batch (and the carried state) -> logs


def build_trainer(config: Config, vocab_size: int, unigram_counts: list[int], total_steps: int = 1000,
                  distribution: Distribution | None = None) -> Trainer:
    """The model, optimizer and compiled train step exactly as `fit` runs them.

    `config` must be resolved (`lmtrain.config.resolve.resolve`). Under a strategy, the weights,
    the optimizer slots and the step's metric are created in its scope (mirrored).
    """
    check_resolved(config, "build_trainer")
    distribution = distribution or create_distribution(config.train)
    keras.utils.set_random_seed(config.train.seed)
    with distribution.strategy.scope():
        model = create_model(config, vocab_size, unigram_counts)
        optimizer = create_optimizer(config.train, total_steps, config.model.hidden_dim)
        optimizer.build(model.trainable_variables)
        step = create_step(config, model, optimizer, vocab_size, unigram_counts)
    train_fn = tf.function(distributed_step(distribution, step), jit_compile=config.train.jit_compile is True)
    return Trainer(model, optimizer, step, train_fn)


def create_step(config: Config, model: LanguageModel, optimizer: keras.optimizers.Optimizer, vocab_size: int,
                unigram_counts: list[int]) -> TrainStep:
    """The training step of `model` a config describes: its loss (sampled, with its sampler, or
    full), the clip and the optimizer."""
    loss, sampler = training_loss(config, vocab_size, unigram_counts)
    return TrainStep(model, optimizer, loss, sampler, config.train.clip_norm)
