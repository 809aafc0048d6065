"""`Embedding`: `keras.layers.Embedding` whose lookup reads only the rows it needs, with
embedding dropout over whole word types (`word_dropout`)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from lmtrain.keras.regularize import check_rate, keep_mask


@keras.saving.register_keras_serializable(package="lmtrain")
class Embedding(keras.layers.Embedding):
    """`keras.layers.Embedding` whose lookup reads only the rows it needs (a ResourceGather).

    A drop-in replacement (same arguments, weights and saved form). Keras' own lookup first
    reads the whole [V, E] variable. Once an optimizer has updated a variable with scatter ops
    (as `LazyAdam` does), TensorFlow switches it to copy-on-read, and every whole read then
    copies all V rows: at V = 100k that added ~80 ms a step here, more than the output layer.

    `word_dropout`: in training, drop whole word types (embedding dropout, Gal & Ghahramani
    2016; AWD-LSTM uses 0.1): each id's row is zeroed for the whole batch with this
    probability, every occurrence of it alike, and the kept rows scaled by 1 / (1 - rate). The
    mask is one [V] draw per call from the layer's own seed generator (a variable of the layer,
    so a checkpoint resumes with the same masks; it exists only when the rate is not 0).
    """

    def __init__(self, input_dim: int, output_dim: int, word_dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(input_dim, output_dim, **kwargs)
        self.word_dropout = check_rate("Embedding word_dropout", word_dropout)
        # Only with a rate: a generator is a variable, and a run directory's checkpoint stores
        # them by position.
        self.word_seed = keras.random.SeedGenerator() if self.word_dropout else None

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if self.lora_enabled or self.quantization_mode is not None:
            return super().call(inputs)
        ids = tf.cast(inputs, tf.int32)
        rows = tf.gather(self.embeddings.value, ids)  # (B, T, E)
        if training and self.word_seed is not None:
            scale = keep_mask([self.input_dim], self.word_dropout, self.word_seed, rows.dtype)  # (V,)
            rows = rows * tf.gather(scale, ids)[..., None]
        return tf.cast(rows, self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.word_dropout:  # absent at 0: a file saved before the argument existed loads as it was
            config["word_dropout"] = self.word_dropout
        return config
