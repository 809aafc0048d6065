"""The `SampledSoftmax` head with its loss: a sampled-softmax output layer for any Keras model.

The head answers "how do I use sampled softmax in my own Keras model": it is the last layer,
`compile(loss=head.loss)`, and `fit` / `evaluate` / `predict` / `save` work as with
`Dense(V, "softmax")`. Keras calls a loss with (y_true, y_pred) only, so the head's output
carries what the loss needs: in training (`training=True`, as `fit` calls it) the output is the
hidden states themselves, from which the loss computes the sampled softmax over the targets and
`num_sampled` negatives (never all V logits); in inference it is the full-softmax
probabilities, with their logits attached, from which the loss computes the exact
cross-entropy. The maths is `lmtrain.keras.softmax`, the negatives come from
`lmtrain.keras.sampling.CandidateSampler`: the same code `lmtrain fit` trains with.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import keras
import numpy as np
import tensorflow as tf

from lmtrain.keras import softmax
from lmtrain.keras.loss import (
    SampledSoftmaxLoss,
    _EagerMarks,
    _Output,
    _StockLossTrap,
    mark,
)
from lmtrain.keras.negatives import default_negatives, negatives_problem
from lmtrain.keras.sampling import (
    SAMPLERS,
    CandidateSampler,
    RunningUnigramSampler,
    count_ids,
    make_sampler,
    running_log_prior,
    sampler_warning,
    unigram_log_prior,
)

# Keras' losses read targets as float32 (`Loss.__call__` converts them), which holds every
# integer up to 2**24 exactly.
MAX_VOCAB = 1 << 24


@dataclass
class _Tie:
    """The embedding a tied head shares its matrix with: the layer once known, its name always.
    A plain holder, so Keras neither tracks the layer as the head's own nor saves it twice."""

    name: str
    layer: Any = None


@keras.saving.register_keras_serializable(package="lmtrain")
class SampledSoftmax(keras.layers.Layer):
    """A softmax output layer over `vocab_size` classes, trained with the sampled softmax.

    Use it where `Dense(vocab_size, activation="softmax")` would be, and compile with its own
    loss:

    ```python
    head = SampledSoftmax(vocab_size, num_sampled=1000)
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              keras.layers.Embedding(vocab_size, 256),
                              keras.layers.LSTM(1024, return_sequences=True),
                              head])
    model.compile(optimizer=lmtrain.keras.LazyAdam(1e-3), loss=head.loss)
    model.fit(x, y)   # x, y: int token ids [N, T]
    ```

    It owns a [V, D] matrix `kernel` (one row per class, the transpose of a Dense kernel: the
    sampled loss gathers rows) and a [V] `bias`, both float32 whatever the dtype policy.

    Args:
        vocab_size: number of classes V (ids 0 .. V-1).
        num_sampled: negatives drawn per training step, shared by every position of the batch;
            fewer than `vocab_size`. None (the default): an eighth of `vocab_size`, at least
            1,024 and at most 4,096 (2,048 where `counts=` is given, so the bias starts at the
            unigram), as `lmtrain fit` draws (`lmtrain.keras.negatives.default_negatives`).
        sampler: the proposal the negatives are drawn from: "unigram" (the default: in proportion
            to the targets' counts, from `counts=` or `adapt` where given, else counted from the
            targets as training goes, in the layer's `target_counts` weight; any id order works),
            "log_uniform" (Zipf, TensorFlow's default: right only when ids are sorted by
            decreasing frequency, as Keras' `TextVectorization` sorts them; a warning says so when
            known counts show they are not) or "uniform".
        counts: how often each id occurs as a target in the training data ([V] non-negative).
        tied_to: a `keras.layers.Embedding` (or `lmtrain.keras.Embedding`) of the same model with
            `vocab_size` rows, whose [V, D] matrix the head uses as its own (one matrix, trained
            by both uses: Press & Wolf 2017); the head's inputs must then be D wide (put a
            `Dense(D)` before it if the layer below is wider). The head keeps its own bias.
        distortion: the unigram proposal is proportional to (count + 1) ** distortion.
        unique: draw `num_sampled` distinct negatives (without replacement); else with replacement.
        seed: seeds the negatives; with the layer's `step` counter it keys a stateless draw, so a
            restored model continues with the negatives an uninterrupted one would have drawn.
        kernel_initializer, bias_initializer: initializers of `kernel` and `bias`. bias_initializer
            None (the default): the log of the add-one unigram of the counts where they are known
            before training (`counts=`, or `adapt` before the first step), as `lmtrain fit` starts
            (the untrained head is then the unigram model, and the rare ids' logits start low:
            see `lmtrain.keras.sampling.unigram_log_prior`). Where they are not (no setup), the
            bias starts at zero and the logits add the log of the smoothed unigram of the targets
            counted so far (`log_prior`), in training and in `predict` alike: the head starts
            where `adapt` starts as soon as the counts fill in, on any id order.

    Call: inputs [..., D] (e.g. [B, T, D] from an LSTM with `return_sequences=True`, or [B, D]).
    With `training=True` (as `fit` calls it) the output is the inputs, as float32: the hidden
    states `head.loss` needs. Otherwise it is the full-softmax probabilities [..., V].

    `head.loss` takes integer targets ([B, T] for 3-D inputs, [B] for 2-D; a trailing 1 is
    allowed) and gives the sampled-softmax loss in training and the exact full-softmax
    cross-entropy (nats per token) in evaluation. Keras masking and `sample_weight` weight it as
    they weight any Keras loss.
    """

    def __init__(self, vocab_size: int, num_sampled: int | None = None, sampler: str | None = None,
                 counts: Iterable[int] | None = None, distortion: float = 1.0, unique: bool = True,
                 seed: int | None = None, tied_to: Any = None, kernel_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        num_sampled = _checked_args(vocab_size, num_sampled, sampler, counts is not None and bias_initializer is None)
        if not distortion > 0:
            raise ValueError(f"SampledSoftmax: distortion must be positive; got {distortion!r}")
        self.vocab_size, self.num_sampled = int(vocab_size), int(num_sampled)
        self.sampler_name, self.distortion, self.unique = sampler, float(distortion), bool(unique)
        self.seed = int(seed) if seed is not None else random.randrange(2**31)
        self.counts = None if counts is None else _checked_counts(counts)
        if tied_to is None or isinstance(tied_to, str):
            self._tie = None if tied_to is None else _Tie(tied_to)
        elif isinstance(tied_to, keras.layers.Embedding):
            self._tie = _Tie(tied_to.name, tied_to)
        else:
            raise ValueError(f"SampledSoftmax: tied_to must be a keras.layers.Embedding of the same model (or its "
                             f"name); got {type(tied_to).__name__}")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = None if bias_initializer is None else keras.initializers.get(bias_initializer)
        self.supports_masking = True
        self._candidates: CandidateSampler | None = None
        self._eager_outputs = _EagerMarks()

    # ---- Keras layer contract ---------------------------------------------------------------

    def build(self, input_shape: Any) -> None:
        dim = input_shape[-1] if input_shape else None
        if dim is None:
            raise ValueError(f"SampledSoftmax: the last dimension of its input must be known; got shape {input_shape}")
        self.input_dim = int(dim)
        # float32 and not autocast: the sampled loss's log-Q correction needs float32, and an
        # autocast read would cast all V rows every step.
        if self._tie is None:
            self._kernel = self.add_weight(shape=(self.vocab_size, self.input_dim),
                                           initializer=self.kernel_initializer, dtype="float32", autocast=False,
                                           name="kernel")
        elif self._tie.layer is not None:
            _check_tie(self)
        self.bias = self.add_weight(shape=(self.vocab_size,), initializer=self._bias_initializer(), dtype="float32",
                                    autocast=False, name="bias")
        # Training steps taken: with `seed` it keys the negatives. One per replica's step under
        # tf.distribute (every replica draws the same negatives).
        self.step = self.add_weight(shape=(), initializer="zeros", dtype="int64", trainable=False, autocast=False,
                                    aggregation="only_first_replica", name="step")
        # How often each id has been a training target: the proposal when no counts are given
        # (the running unigram), kept in every mode so the weights do not depend on it. Summed
        # over replicas: each adds its own share of the batch.
        self.target_counts = self.add_weight(shape=(self.vocab_size,), initializer="zeros", dtype="float32",
                                             trainable=False, autocast=False, aggregation="sum",
                                             name="target_counts")
        # Their sum, kept apart so the running prior (`log_prior`) needs no [V]-wide read a step.
        self.targets_counted = self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False,
                                               autocast=False, aggregation="sum", name="targets_counted")

    @property
    def kernel(self) -> keras.Variable:
        """The [V, D] output matrix: the head's own, or the tied embedding's."""
        if self._tie is None:
            return self._kernel
        if self._tie.layer is None:
            raise ValueError(f"SampledSoftmax layer {self.name!r}: tied_to={self._tie.name!r} names no layer that "
                             f"feeds this head; tie it to an Embedding whose output reaches the head's input")
        return self._tie.layer.embeddings

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        hidden = tf.cast(inputs, tf.float32)  # (..., D)
        if training:
            out = tf.identity(hidden)
            mark(self, out, _Output(self, True))
            try:
                out._keras_logits = _StockLossTrap(self.name)
            except AttributeError:  # an eager tensor (run_eagerly): no trap there
                pass
            return out
        logits = softmax.logits(hidden, self.kernel, self.logit_bias())  # (..., V)
        probs = tf.nn.softmax(logits)
        mark(self, probs, _Output(self, False, logits))
        try:
            probs._keras_logits = logits  # Keras' own cross-entropies then use the logits too
        except AttributeError:
            pass
        return probs

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (*input_shape[:-1], self.vocab_size)

    def compute_output_spec(self, inputs: Any, training: Any = None) -> keras.KerasTensor:
        if self._tie is not None and self._tie.layer is None:
            # A head restored from its config knows the embedding by name only: find it among
            # the layers the symbolic input came through (Keras rebuilds a loaded model this way).
            self._tie.layer = _upstream_layer(inputs, self._tie.name)
            if self._tie.layer is not None:
                _check_tie(self)
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size, num_sampled=self.num_sampled, sampler=self.sampler_name,
            counts=None if self.counts is None else self.counts.tolist(), distortion=self.distortion,
            unique=self.unique, seed=self.seed, tied_to=None if self._tie is None else self._tie.name,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=(None if self.bias_initializer is None
                              else keras.initializers.serialize(self.bias_initializer)),
        )
        return config

    # ---- the loss and the sampler -----------------------------------------------------------

    @property
    def loss(self) -> SampledSoftmaxLoss:
        """The loss to compile the model with: sampled in training, exact in evaluation."""
        return SampledSoftmaxLoss(head=self)

    def adapt(self, data: Any) -> None:
        """Count how often each id occurs in `data` (training targets) for the unigram sampler.

        `data`: an array or tensor of ids, or a `tf.data.Dataset` of them; a dataset of tuples
        (such as (x, y) pairs) is read for its last element, the targets.
        """
        if self.learns_prior and self.built and int(self.step.numpy()) > 0:
            raise ValueError(f"SampledSoftmax layer {self.name!r}: adapt before training; this head has trained "
                             f"{int(self.step.numpy())} steps with no counts, so its logits add the prior of the "
                             f"targets it counted (its `target_counts`), which adapt would take away")
        counts = count_ids(data, self.vocab_size, "SampledSoftmax.adapt")
        self.counts = counts
        self._candidates = None
        if self.built and self.bias_initializer is None and int(self.step.numpy()) == 0:
            self.bias.assign(unigram_log_prior(counts))  # not trained yet: start where build would have

    def _bias_initializer(self) -> Any:
        """The bias's initializer: the one given, else the unigram's log prior where the counts
        are known, else zeros."""
        if self.bias_initializer is not None:
            return self.bias_initializer
        if self.counts is None:
            return "zeros"
        return keras.initializers.Constant(unigram_log_prior(self.counts))

    @property
    def sampler(self) -> CandidateSampler | RunningUnigramSampler:
        """The candidate sampler the training loss draws negatives with (built on first use)."""
        if self._candidates is None:
            if self._running and not self.built:
                raise ValueError(f"SampledSoftmax layer {self.name!r}: build the layer (call it) before drawing "
                                 f"negatives from its running counts")
            if warning := sampler_warning(self.sampler_name, self.counts, skip=0):
                warnings.warn(f"SampledSoftmax layer {self.name!r}: sampler='log_uniform' {warning} in its counts; "
                              f"the default sampler (unigram) fits any id order", stacklevel=2)
            self._candidates = make_sampler(self.sampler_name, self.vocab_size, self.num_sampled, self.seed,
                                            self.counts, self.distortion, self.unique,
                                            self.target_counts.value if self._running else None)
        return self._candidates

    @property
    def _running(self) -> bool:
        """True when the proposal is the unigram counted during training (no counts given)."""
        return (self.sampler_name or "unigram") == "unigram" and self.counts is None

    @property
    def learns_prior(self) -> bool:
        """True when the logits add the running counts' log unigram (`log_prior`): no counts
        given, no `adapt`, and the bias left to its default start."""
        return self.counts is None and self.bias_initializer is None

    def log_prior(self, ids: tf.Tensor | None = None) -> tf.Tensor:
        """What the logits add where the head has no counts (`learns_prior`): the log of the
        smoothed unigram of the targets counted so far ([V], or at `ids`;
        `lmtrain.keras.sampling.running_log_prior` says why and how)."""
        return running_log_prior(self.target_counts.value, tf.convert_to_tensor(self.targets_counted), ids)

    def logit_bias(self) -> tf.Tensor:
        """The [V] bias the logits add: `bias`, plus `log_prior()` where the head learns it."""
        return self.bias.value + self.log_prior() if self.learns_prior else self.bias.value

    def load_own_variables(self, store: Any) -> None:
        """As Keras loads a layer, also from a file written before `targets_counted` existed (it is
        then the sum of the counts) or before `target_counts` did too (both start from zero)."""
        variables = self._trainable_variables + self._non_trainable_variables
        missing = len(variables) - len(store.keys())
        if missing in (1, 2) and variables[-2:] == [self.target_counts, self.targets_counted]:
            for i, v in enumerate(variables[:-missing]):
                v.assign(store[f"{i}"])
            self.targets_counted.assign(tf.reduce_sum(self.target_counts))
            return
        super().load_own_variables(store)


def _upstream_layer(tensor: Any, name: str) -> Any:
    """The layer named `name` among those a symbolic tensor was computed through, or None."""
    seen, stack = set(), [tensor]
    while stack:
        history = getattr(stack.pop(), "_keras_history", None)
        layer = getattr(history, "operation", None)
        if layer is None or id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer.name == name:
            return layer
        stack.extend(layer._inbound_nodes[history.node_index].input_tensors)
    return None


def _check_tie(head: SampledSoftmax) -> None:
    """A tied head's embedding: built, one row per class, as wide as the head's input."""
    layer = head._tie.layer
    if not layer.built:
        raise ValueError(f"SampledSoftmax(tied_to={layer.name!r}): that embedding must be built (called) before "
                         f"the head; call the embedding first in the model")
    rows, width = int(layer.input_dim), int(layer.output_dim)
    if rows != head.vocab_size:
        raise ValueError(f"SampledSoftmax(vocab_size={head.vocab_size}, tied_to={layer.name!r}): that embedding "
                         f"has {rows} rows; a tied head needs one row per class")
    if width != head.input_dim:
        raise ValueError(f"SampledSoftmax(tied_to={layer.name!r}): the head's input is {head.input_dim} wide but "
                         f"the embedding's rows are {width} wide; project the input first, e.g. "
                         f"keras.layers.Dense({width}) before the head")


def _checked_args(vocab_size: Any, num_sampled: Any, sampler: Any, unigram_bias: bool) -> int:
    """The head's vocabulary, negatives and sampler checked (a ValueError naming the argument);
    the number of negatives, the default's where None (fewer where the bias will start at the
    unigram, `unigram_bias`)."""
    integer = isinstance(vocab_size, (int, np.integer)) and not isinstance(vocab_size, bool)
    if not integer or not 2 <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"SampledSoftmax: vocab_size must be an integer from 2 to {MAX_VOCAB}; got {vocab_size!r}")
    if num_sampled is None:
        num_sampled = default_negatives(vocab_size, unigram_bias=unigram_bias)
        if negatives_problem(num_sampled, vocab_size):
            raise ValueError(f"SampledSoftmax: the default num_sampled ({num_sampled}) needs a larger vocabulary; "
                             f"got vocab_size {int(vocab_size)}: pass num_sampled from 1 to "
                             f"{int(vocab_size) - 1}, or use a full softmax (Dense) at this size")
    problem = negatives_problem(num_sampled, vocab_size)
    if problem:
        raise ValueError(f"SampledSoftmax: num_sampled {problem}")
    if sampler is not None and sampler not in SAMPLERS:
        raise ValueError(f"SampledSoftmax: sampler must be one of {', '.join(map(repr, SAMPLERS))} (or None); "
                         f"got {sampler!r}")
    return int(num_sampled)


def _checked_counts(counts: Iterable[int]) -> np.ndarray:
    c = np.asarray(list(counts) if not isinstance(counts, np.ndarray) else counts)
    if c.ndim != 1 or (c.size and (not np.all(np.isfinite(c)) or c.min() < 0)):
        raise ValueError("SampledSoftmax: counts must be a 1-D list of non-negative numbers, one per id")
    return c.astype(np.int64)
