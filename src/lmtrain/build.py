"""Config -> objects: the one place a config becomes a model, a training loss and its sampler,
an optimizer and its schedule, and a run's step counts (the training step and its compiled form
are `lmtrain.fit`'s).

`fit`, `eval`, `generate`, `export`, `lmtrain.load` and the benchmarks all build here, so they
make the same choices from the same config and vocabulary (a resumed run, an evaluation and a
benchmark cannot drift from what `fit` trained). The config must have its run's choices made
(`lmtrain.config.resolve.resolve`) where a choice depends on the run; `rebuild` resolves a run
directory's config, which is resolved already unless it predates a key.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lmtrain.config.precision import choose_precision
from lmtrain.config.resolve import check_resolved, choose_softmax, resolve
from lmtrain.config.schema import Config, TrainConfig
from lmtrain.data.meta import DataMeta
from lmtrain.data.records import num_windows, stream_windows_per_row
from lmtrain.errors import LmtrainError
from lmtrain.keras.optim import LazyAdam, warmup_cosine, warmup_stable_decay
from lmtrain.keras.sampling import make_sampler, unigram_log_prior
from lmtrain.keras.softmax import SamplerFn
from lmtrain.model import LanguageModel

# ---- the model and its sampler -------------------------------------------------------------

def initial_output_bias(kind: str, unigram_counts: list[int]) -> np.ndarray | None:
    """The output layer's initial bias (`model.output_bias_init`): None for zeros, or for "unigram"
    log Q of the training unigram (`lmtrain.keras.sampling.unigram_log_prior`, which says why),
    so the untrained model is the unigram model."""
    if kind == "zeros":
        return None
    return unigram_log_prior(unigram_counts)


def create_model(config: Config, vocab_size: int, unigram_counts: list[int], initialise: bool = True
                 ) -> LanguageModel:
    """Build the model a config describes, with its weights created (ready to restore or train):
    the one place a model config becomes a model. The config must be resolved
    (`lmtrain.config.resolve.resolve`): whether to tie depends on the run's length.
    `initialise=False`: the weights start at zero, for a checkpoint to overwrite."""
    check_resolved(config, "create_model")
    precision = choose_precision(config.train.precision)[0]
    bias = initial_output_bias(config.model.output_bias_init, unigram_counts)
    model = LanguageModel(config.model, vocab_size, precision=precision, output_bias=bias, initialise=initialise,
                          name="lstm_lm")
    model.build(None)
    return model


def training_loss(config: Config, vocab_size: int, unigram_counts: list[int]) -> tuple[str, SamplerFn | None]:
    """The training loss `model.softmax` stands for at this vocabulary ("sampled" or "full"), and
    for the sampled one its negatives' sampler: stateless, keyed by (`train.seed`, step), so a
    resumed run draws the negatives an uninterrupted one draws."""
    m = config.model
    loss, _ = choose_softmax(m, vocab_size)
    if loss == "full":
        return loss, None  # no negatives drawn (and num_sampled may exceed the vocabulary)
    m.check_negatives(vocab_size)
    return loss, make_sampler(m.sampler, vocab_size, m.negatives(vocab_size), config.train.seed, unigram_counts,
                              m.sampler_distortion, m.sampler_unique)


# ---- the optimizer and its schedule ----------------------------------------------------------

class _SummedGradients:
    """Take gradients as already summed over replicas.

    Keras sums gradients over replicas inside `apply`, in the replica context. `TrainStep`
    sums them itself, before clipping and the finiteness check (so every replica clips by the
    global norm and takes the same apply-or-skip decision), and applies them from the
    cross-replica context; summing again would multiply them by the number of replicas.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars: Any) -> Any:
        return grads_and_vars


class Adam(_SummedGradients, keras.optimizers.Adam):
    """Keras' dense Adam (`train.optimizer: adam`), taking gradients already summed over replicas."""


class SummedLazyAdam(_SummedGradients, LazyAdam):
    """`LazyAdam` taking gradients already summed over replicas (`train.optimizer: lazy_adam`)."""


class SGD(_SummedGradients, keras.optimizers.SGD):
    """Plain SGD (`train.optimizer: sgd`), the optimizer of the classic PTB setups; it keeps a row
    gradient sparse without help, and takes gradients already summed over replicas.

    `warmup_steps`: the rate rises linearly over the first that many steps, (step + 1) /
    warmup_steps of it, then stays (a constant rate, or the plateau schedule's, which lowers the
    rate variable). Why: with the classic rate of 20 and clipping at 0.25 every early step moves
    the weights by 5 in norm whatever the gradient, and on Penn Treebank medium that full step
    from the first batch on closed the last LSTM layer's output gates for good in one seed of
    six: the model stayed the unigram model (benchmarks/results/ptb-medium-start-2026-12-07.md).
    The warm-up scales the update, not the rate variable, so the plateau schedule and the
    checkpoint see the rate as before, and a resumed run (the step count is checkpointed) warms
    up exactly as an uninterrupted one.
    """

    def __init__(self, learning_rate: Any = 0.01, warmup_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.warmup_steps = int(warmup_steps)

    def warmup_factor(self) -> tf.Tensor:
        """The share of the rate this step applies: (step + 1) / warmup_steps in the warm-up, then 1."""
        if not self.warmup_steps:
            return tf.constant(1.0)
        return tf.minimum(1.0, tf.cast(self.iterations + 1, tf.float32) / float(self.warmup_steps))

    def update_step(self, gradient: Any, variable: keras.Variable, learning_rate: Any) -> None:
        rate = tf.cast(learning_rate, tf.float32) * self.warmup_factor()
        super().update_step(gradient, variable, tf.cast(rate, variable.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "warmup_steps": self.warmup_steps}


def create_optimizer(config: TrainConfig, total_steps: int, hidden_dim: int) -> keras.optimizers.Optimizer:
    """`train.optimizer`: lazy_adam (row-sparse, the default), adam (Keras' dense Adam) or sgd, with
    the `train.schedule` learning rate over `total_steps` (its peak from `hidden_dim` where
    train.learning_rate is null).

    Under mixed_float16 the optimizer is wrapped for dynamic loss scaling (float16 gradients
    underflow without it); bfloat16 has float32's range and needs none.
    """
    rate = learning_rate(config, total_steps, hidden_dim)
    if config.optimizer == "adam":
        optimizer: keras.optimizers.Optimizer = Adam(learning_rate=rate)
    elif config.optimizer == "sgd":
        # The warm-up schedules warm up themselves; a constant or plateau rate warms up in SGD.
        warmup = config.warmup_steps if config.schedule in ("constant", "plateau") else 0
        optimizer = SGD(learning_rate=rate, warmup_steps=warmup or 0)
    else:
        optimizer = SummedLazyAdam(learning_rate=rate)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def learning_rate(config: TrainConfig, total_steps: int, hidden_dim: int = 512
                  ) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """A constant (a variable the plateau schedule lowers during fit), `warmup_cosine` or
    `warmup_stable_decay`, as `config.schedule_for(total_steps, hidden_dim)` says; the rate is
    `config.rate(hidden_dim)`."""
    rate = config.rate(hidden_dim)
    schedule = config.schedule_for(total_steps, hidden_dim)
    if schedule == "warmup_stable_decay":
        return warmup_stable_decay(rate, total_steps, config.warmup_steps, config.decay_share, config.min_lr_ratio)
    if schedule != "warmup_cosine":
        return rate
    return warmup_cosine(rate, total_steps, config.warmup_steps, config.min_lr_ratio)


# ---- the train step and the run's length -----------------------------------------------------

def step_counts(config: Config, meta: DataMeta) -> tuple[int, int]:
    """(steps per epoch, total steps) of a training run."""
    t = config.train
    tokens = meta.splits["train"].tokens
    if t.stateful:
        steps_per_epoch = stream_windows_per_row(tokens, t.batch_size, t.seq_len)
    else:
        steps_per_epoch = num_windows(tokens, t.seq_len) // t.batch_size
    if steps_per_epoch < 1:
        raise LmtrainError(
            f"train.batch_size: the training split ({tokens} tokens) is smaller than one batch of "
            f"{t.batch_size} x {t.seq_len}; lower train.batch_size or train.seq_len"
        )
    total = steps_per_epoch * t.epochs
    return steps_per_epoch, min(total, t.max_steps) if t.max_steps is not None else total


def rebuild(config: Config, meta: DataMeta) -> tuple[Config, LanguageModel, keras.optimizers.Optimizer]:
    """The config with its run's choices made, the model and the optimizer a run of `config` on
    the data `meta` describes trains: what a run directory's checkpoint is restored into
    (`lmtrain.use.load.load_run`). The optimizer is built, not restored: its slots stay unread."""
    total_steps = step_counts(config, meta)[1]
    # A run directory's config has them made (unchanged), or was written before a key existed:
    # it is its own start, so such a key stands for what that version trained with.
    config = resolve(config, total_steps, started=config, train_tokens=meta.splits["train"].tokens,
                     vocab_size=meta.vocab_size)
    model = create_model(config, meta.vocab_size, meta.unigram_counts, initialise=False)
    return config, model, create_optimizer(config.train, total_steps, config.model.hidden_dim)
