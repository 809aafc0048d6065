"""`lmtrain.keras`: sampled softmax for your own Keras model (the library `lmtrain fit` is built on).

A package that imports nothing from the app (`lmtrain.config.schema`, `lmtrain.fit.loop`, the CLI...): the
app imports it, never the reverse. Its modules: `layers` (the SampledSoftmax head), `loss` (its
loss, and what the head's outputs carry for it), `embedding`, `lstm`, `regularize` (dropout
masks and activation penalties), `softmax` (the maths both the head and `lmtrain fit` use),
`sampling` (the negatives), `negatives` (how many, and the one check on that number), `optim`
(LazyAdam and the warm-up schedules) and `tfboot` (TensorFlow imported without its start-up
notices).

    import math
    import keras
    from lmtrain.keras import LSTM, SampledSoftmax, LazyAdam, warmup_cosine

    head = SampledSoftmax(vocab_size, num_sampled=1000)
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              keras.layers.Embedding(vocab_size, 256),
                              LSTM(1024, return_sequences=True),  # or keras.layers.LSTM
                              head])
    model.compile(optimizer=LazyAdam(warmup_cosine(7e-3, total_steps=math.ceil(len(x) / 32))), loss=head.loss)
    model.fit(x, y)               # sampled softmax
    model.evaluate(x_val, y_val)  # exact full-softmax cross-entropy, nats per token
    model.predict(x[:2])          # full-softmax probabilities [2, T, V]

- `SampledSoftmax`: the output layer (owns the [V, D] matrix and the bias, or shares an
  Embedding's matrix with `tied_to=`) and its loss. Needs no setup: with no `counts=` and no
  `adapt`, it draws negatives from the running counts of the targets, on any id order.
- `LazyAdam`: Adam that updates only the rows a sparse gradient touches.
- `warmup_cosine`: `lmtrain fit`'s default learning rate (5% linear warm-up, cosine decay).
- `Embedding`: `keras.layers.Embedding` that reads only the rows it looks up (no whole-matrix
  copy per step once LazyAdam has scatter-updated it), with `word_dropout` (whole word types).
- `LSTM`: `keras.layers.LSTM` with `impl="auto" | "keras" | "fused"`; the fused kernel (forward
  and backward written for the CPU) trains about 2x faster there, with the same weights. And
  AWD-LSTM's regularisers, which Keras lacks: `weight_drop` on the recurrent kernel,
  `output_dropout` (locked), `ar` / `tar` (`regularize` holds the shared pieces).
- `CandidateSampler`, `RunningUnigramSampler` and the proposals: the stateless negative
  samplers, for custom losses.

Needs the TensorFlow backend of Keras 3. TensorFlow is imported when a name above is first
used (PEP 562), so the TensorFlow-free modules (`negatives`, `tfboot`) load without it; where
Keras is already imported, the layers are imported (and registered for
`keras.models.load_model`) at once. To load a saved model that holds them, import Keras or any
name from `lmtrain.keras` first.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# Each public name and the module that defines it.
_EXPORTS = {
    "SampledSoftmax": "layers", "SampledSoftmaxLoss": "loss", "LazyAdam": "optim", "warmup_cosine": "optim",
    "Embedding": "embedding", "LSTM": "lstm", "CandidateSampler": "sampling", "RunningUnigramSampler": "sampling",
    "unigram_proposal": "sampling", "log_uniform_proposal": "sampling", "uniform_proposal": "sampling",
}
# The modules whose classes Keras' loader must find registered.
_REGISTERED = ("layers", "loss", "optim", "embedding", "lstm")
__all__ = list(_EXPORTS)


def _load_keras() -> None:
    """Import TensorFlow (without its CPU-machine start-up notices) and check Keras' backend."""
    from lmtrain.keras.tfboot import import_tensorflow

    import_tensorflow()  # before Keras imports it
    import keras

    if keras.backend.backend() != "tensorflow":  # pragma: no cover - the project installs TensorFlow
        raise ImportError(
            f"lmtrain.keras needs Keras' TensorFlow backend; KERAS_BACKEND is {keras.backend.backend()!r}"
        )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lmtrain.keras' has no attribute {name!r}")
    _load_keras()
    value = getattr(importlib.import_module(f"lmtrain.keras.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if "keras" in sys.modules:  # TensorFlow is loaded already: register the classes for keras' loader now
    _load_keras()
    for _module in _REGISTERED:
        importlib.import_module(f"lmtrain.keras.{_module}")
