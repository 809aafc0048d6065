"""`lmtrain.keras`: sampled softmax for your own Keras model (the library `lmtrain fit` is built on).

A package that imports nothing from the app (`lmtrain.config`, `lmtrain.train`, the CLI...): the
app imports it, never the reverse. Its modules: `layers` (the SampledSoftmax head and its loss;
`outputs`, what the head's outputs carry for it), `embedding`, `lstm`, `regularize` (dropout
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

Needs the TensorFlow backend of Keras 3.
"""

from __future__ import annotations

from lmtrain.keras.tfboot import import_tensorflow as _import_tensorflow

_import_tensorflow()  # before Keras imports it: without TensorFlow's CPU-machine start-up notices

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":  # pragma: no cover - the project installs TensorFlow
    raise ImportError(f"lmtrain.keras needs Keras' TensorFlow backend; KERAS_BACKEND is {_keras.backend.backend()!r}")

from lmtrain.keras.embedding import Embedding  # noqa: E402
from lmtrain.keras.layers import SampledSoftmax, SampledSoftmaxLoss  # noqa: E402
from lmtrain.keras.lstm import LSTM  # noqa: E402
from lmtrain.keras.optim import LazyAdam, warmup_cosine  # noqa: E402
from lmtrain.keras.sampling import (  # noqa: E402
    CandidateSampler,
    RunningUnigramSampler,
    log_uniform_proposal,
    uniform_proposal,
    unigram_proposal,
)

__all__ = ["SampledSoftmax", "SampledSoftmaxLoss", "LazyAdam", "warmup_cosine", "Embedding", "LSTM", "CandidateSampler",
           "RunningUnigramSampler", "unigram_proposal", "log_uniform_proposal", "uniform_proposal"]
