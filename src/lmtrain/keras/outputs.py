"""What a `SampledSoftmax` head's output tensor carries for its loss, and the guards around it.

Keras calls a loss with (y_true, y_pred) only, so the head attaches to each tensor it returns
what its loss needs (`_Output`: the head, whether it is the training output, the logits), as an
attribute, or for eager tensors (which take none) in an `_EagerMarks` table.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tensorflow as tf

if TYPE_CHECKING:
    from lmtrain.keras.layers import SampledSoftmax


@dataclass(frozen=True)
class _Output:
    """What a head's output tensor carries for its loss."""

    head: "SampledSoftmax"
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
