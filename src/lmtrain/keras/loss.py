"""The loss of a `SampledSoftmax` head, and what the head's outputs carry for it.

Keras calls a loss with (y_true, y_pred) only, so the head attaches to each tensor it returns
what its loss needs (`_Output`: the head, whether it is the training output, the logits), as an
attribute, or for eager tensors (which take none) in an `_EagerMarks` table. `head_nll` reads
it back: the sampled softmax over the targets and the step's negatives on the training output
(`lmtrain.keras.softmax`'s maths), the exact cross-entropy on the inference output. The targets
are checked here (`target_ids`), so a wrong shape or dtype is an error that says what was
expected, not a shape error from inside TensorFlow. The head itself (`lmtrain.keras.layers`)
keeps to the Keras layer contract.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from lmtrain.keras import softmax


@dataclass(frozen=True)
class _Output:
    """What a head's output tensor carries for its loss."""

    head: Any  # the SampledSoftmax layer
    training: bool  # True: the output is the hidden states; False: probabilities
    logits: Any = None  # the probabilities' logits (inference only)


class _EagerMarks:
    """`_Output`s of eager tensors (which take no attributes), by tensor id until it is freed.
    Not a dict attribute of the layer, which Keras would track and walk when saving."""

    def __init__(self) -> None:
        self._by_id: dict[int, _Output] = {}

    def put(self, tensor: Any, output: _Output) -> None:
        key = id(tensor)
        self._by_id[key] = output
        weakref.finalize(tensor, self._by_id.pop, key, None)

    def get(self, tensor: Any) -> _Output | None:
        return self._by_id.get(id(tensor))


class _StockLossTrap:
    """Set as `_keras_logits` of the training output. Keras' own cross-entropies look for that
    attribute and convert it to a tensor; this turns that into a clear error instead of a
    silent loss computed from hidden states (`compile(loss="sparse_categorical_crossentropy")`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __tf_tensor__(self, dtype: Any = None, name: Any = None) -> tf.Tensor:
        raise ValueError(
            f"SampledSoftmax layer {self.name!r}: in training its output is the hidden states, not "
            f"probabilities, so a stock loss cannot be used with it; compile the model with the head's "
            f"own loss: model.compile(optimizer=..., loss=head.loss)"
        )


def _is_placeholder(tensor: Any) -> bool:
    """True for a graph input: what Keras' symbolic build passes a loss in place of predictions."""
    op = getattr(tensor, "op", None)
    return op is not None and not isinstance(tensor, tf.__internal__.EagerTensor) and op.type == "Placeholder"


def mark(head: Any, tensor: tf.Tensor, output: _Output) -> None:
    """Attach `output` to a tensor this layer returns (eager tensors take no attributes:
    they are remembered by id until they are freed)."""
    try:
        tensor._lmtrain_output = output
    except AttributeError:
        head._eager_outputs.put(tensor, output)

def output_of(head: Any, y_pred: Any) -> _Output:
    output = getattr(y_pred, "_lmtrain_output", None) or head._eager_outputs.get(y_pred)
    if output is None or output.head is not head:
        raise ValueError(
            f"the loss of SampledSoftmax layer {head.name!r} got predictions that are not that layer's output; "
            f"head.loss only works as the loss of a model whose output is head's output")
    return output


def head_nll(head: Any, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-position loss of a head's output `y_pred` against integer targets `y_true`: the sampled
    softmax on the training output (drawing the step's negatives and counting the targets), the
    exact cross-entropy of the attached logits on the inference output."""
    labels = target_ids(y_true, y_pred, head.vocab_size)  # (...,) int64, y_pred's shape without its last axis
    if _is_placeholder(y_pred):
        # Keras' symbolic build (under a distribution strategy) calls the loss on placeholders
        # only to learn its output's shape and dtype.
        return tf.zeros(tf.shape(labels), tf.float32)
    output = output_of(head, y_pred)
    flat_labels = tf.reshape(labels, [-1])  # (N,)
    if not output.training:
        logits = tf.reshape(output.logits, [-1, head.vocab_size])
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=flat_labels, logits=logits)
        return tf.reshape(nll, tf.shape(labels))
    hidden = tf.reshape(y_pred, [-1, head.input_dim])  # (N, D)
    step = tf.convert_to_tensor(head.step)  # read before the increment below
    rows = softmax.output_rows(head.kernel.value, head.bias.value, flat_labels, head.sampler, step)
    if head.learns_prior:  # the running counts' log unigram, added to the rows' logits as `predict` adds it
        rows = rows._replace(b_true=rows.b_true + head.log_prior(rows.labels),
                             b_sampled=rows.b_sampled + head.log_prior(rows.sampled))
    nll = softmax.sampled_nll(hidden, rows)  # (N,)
    mask = getattr(y_pred, "_keras_mask", None)  # padding is not counted as a target
    weights = tf.ones_like(flat_labels, tf.float32) if mask is None else tf.reshape(tf.cast(mask, tf.float32), [-1])
    with tf.control_dependencies([nll]):  # after the draw: a step's proposal never sees its own targets
        head.step.assign_add(1)
        # A scatter of the N targets (the backend variable's), not a [V]-wide add.
        head.target_counts.value.scatter_add(tf.IndexedSlices(weights, flat_labels))
        head.targets_counted.assign_add(tf.reduce_sum(weights))
    return tf.reshape(nll, tf.shape(labels))


def target_ids(y_true: Any, y_pred: tf.Tensor, vocab_size: int) -> tf.Tensor:
    """The targets as int64 class ids shaped like y_pred without its last axis, checked."""
    y = tf.convert_to_tensor(y_true)
    rank = y_pred.shape.rank
    if y.shape.rank == rank and y.shape[-1] == 1:
        y = tf.squeeze(y, -1)
    if y.shape.rank == rank:
        raise ValueError(
            f"SampledSoftmax: expected integer class ids as targets, of shape {_shape(y_pred.shape[:-1])}; got "
            f"targets of shape {_shape(y.shape)}, which look one-hot: pass the ids (e.g. y.argmax(-1)) instead")
    if y.shape.rank != rank - 1 or not y.shape.is_compatible_with(y_pred.shape[:-1]):
        raise ValueError(
            f"SampledSoftmax: expected integer class ids as targets, of shape {_shape(y_pred.shape[:-1])} "
            f"(one per output position); got targets of shape {_shape(y.shape)}")
    if not (y.dtype.is_integer or y.dtype.is_floating):
        raise ValueError(f"SampledSoftmax: expected integer class ids as targets; got dtype {y.dtype.name}")
    values = tf.cast(y, tf.float64)
    valid = tf.reduce_all((values >= 0) & (values < vocab_size) & (tf.floor(values) == values))
    check = tf.debugging.Assert(valid, [f"SampledSoftmax: targets must be integer class ids in [0, "
                                        f"{vocab_size}); got values from", tf.reduce_min(values), "to",
                                        tf.reduce_max(values)], summarize=3)
    with tf.control_dependencies([check]):
        return tf.cast(y, tf.int64)


@keras.saving.register_keras_serializable(package="lmtrain")
class SampledSoftmaxLoss(keras.losses.Loss):
    """The loss of a `SampledSoftmax` head (`head.loss`): sampled softmax on its training
    output, exact full-softmax cross-entropy (nats per token) on its inference output.

    It finds its head through the predictions it is given, so a model loaded from a `.keras`
    file recompiles with it; given a `head`, it insists on predictions from that head.
    """

    def __init__(self, head: Any = None, reduction: str = "sum_over_batch_size",
                 name: str = "sampled_softmax") -> None:
        super().__init__(name=name, reduction=reduction, dtype="float32")
        # A weak reference: the model holds both, and Keras' saving walks strong references.
        self._head = weakref.ref(head) if head is not None else None

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        output = getattr(y_pred, "_lmtrain_output", None)
        head = self._head() if self._head is not None else (output.head if output is not None else None)
        if head is None and _is_placeholder(y_pred):  # Keras' symbolic build: shapes only
            return tf.zeros(tf.shape(y_pred)[:-1], tf.float32)
        if head is None:
            raise ValueError("SampledSoftmaxLoss got predictions that are not a SampledSoftmax layer's output; "
                             "use it as the loss of a model whose last layer is a SampledSoftmax head")
        return head_nll(head, y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}


def _shape(shape: tf.TensorShape) -> str:
    return "[" + ", ".join("batch" if i == 0 and d is None else ("?" if d is None else str(d))
                           for i, d in enumerate(shape.as_list())) + "]"
