"""The Keras language model: Embedding -> LSTM stack -> owned [V, H] output matrix.

The model owns its layers, its weights, the forward pass, exact scoring with the full softmax
(`sequence_nll`, `nll_sum`, chunked so memory is bounded by `softmax.LOGITS_BUDGET`, never
B*T*V) and decoding one token at a time carrying each LSTM layer's (h, c). Training is a
component that takes the model (`lmtrain.fit.step.TrainStep`: the sampled or full loss, the
sampler, clipping, the update): nothing here imports it. The LSTM layers are
`lmtrain.keras.lstm.LSTM` (`model.lstm_impl`: the fused CPU kernel or Keras' own, same weights). The output layer's
maths, the sampler, the row-gathering embedding and the optimizer are the library's
(`lmtrain.keras.softmax`, `lmtrain.keras.sampling`, `lmtrain.keras.layers`, `lmtrain.keras.optim`): what a Keras user
gets from `lmtrain.keras` is what `lmtrain fit` trains with.

Regularisation (AWD-LSTM's): weight drop is the LSTM layers' own and word dropout the
embedding's (`lmtrain.keras`); the dropout masks between layers (per token, or locked: one per
sequence) and the activation penalties on the softmax's input are applied here, with masks that
are the same however many replicas share a batch (`lmtrain.keras.regularize`).

Why the output matrix is a [V, H] weight of the model and not a `Dense` layer: the sampled loss
wants rows per class ([V, D], the transpose of a Dense kernel), and gathering rows is what keeps
its gradient an `IndexedSlices` touching only B*T + num_sampled rows. `call` returns hidden
states, not logits, because computing all V logits is exactly the cost we avoid in training.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from lmtrain.config.resolve import check_resolved_model
from lmtrain.config.schema import ModelConfig
from lmtrain.keras import softmax
from lmtrain.keras.embedding import Embedding
from lmtrain.keras.lstm import LSTM
from lmtrain.keras.regularize import batch_dropout

_IDS = tf.TensorSpec([None, None], tf.int32)  # token ids [B, T] of any batch and length
# The recurrent state carried between calls: (h [num_layers, B, P or H], c [num_layers, B, H])
# float32 (h is proj_size wide in an LSTMP). Stacked tensors rather than a list of pairs, so it
# fits a SavedModel signature as it is.
State = tuple[tf.Tensor, tf.Tensor]


class LanguageModel(keras.Model):
    """LSTM language model trained with sampled (or full) softmax, evaluated with full softmax.

    Built from a resolved `ModelConfig` (`lmtrain.config.resolve.resolve` has made every choice
    its null keys leave open), the vocabulary size, the compute `precision` (the weights stay
    float32 under a mixed policy) and the output bias to start from ([V]; None: zeros). Its
    training step is `lmtrain.fit.step.TrainStep`, which takes the model.
    """

    def __init__(self, config: ModelConfig, vocab_size: int, precision: str = "float32", output_bias: Any = None,
                 initialise: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_resolved_model(config, "LanguageModel")
        self.config = config
        self.vocab_size, self.embedding_dim, self.hidden_dim = vocab_size, config.embedding_dim, config.hidden_dim
        self.num_layers, self.dropout_rate, self.precision = config.num_layers, config.dropout, precision
        self.tie_weights = config.tie_weights
        self._output_bias = output_bias  # [V] initial output bias (None: zeros)
        # `initialise=False`: every weight starts at zero, for a checkpoint to overwrite. A random
        # [V, D] matrix costs seconds and, while its initializer runs, a few copies of itself.
        zeros = {} if initialise else {"embeddings_initializer": "zeros"}
        lstm_zeros = {} if initialise else {"kernel_initializer": "zeros", "recurrent_initializer": "zeros",
                                            "bias_initializer": "zeros", "unit_forget_bias": False}
        self._matrix_init = "glorot_uniform" if initialise else "zeros"
        # AWD-LSTM's regularisers (lmtrain.keras.regularize): weight drop is the LSTM layers',
        # word dropout the embedding's; dropout masks (locked: one per sequence) and the
        # activation penalties on the softmax's input are drawn and added here.
        self.locked_dropout, self.ar, self.tar = config.locked_dropout, config.ar, config.tar
        # Width of the vectors the softmax reads: the projection's if there is one (tying a
        # wider LSTM to the embedding needs one; `resolve` adds it).
        self.projection_dim = config.projection_dim
        # Each LSTM layer's output and fed-back state h: proj_size wide in an LSTMP (c keeps hidden_dim).
        self.proj_size, self.state_width = config.proj_size, config.lstm_output_dim
        self.output_dim = config.projection_dim or self.state_width
        if self.tie_weights and self.output_dim != self.embedding_dim:
            raise ValueError("tie_weights needs the output width (projection_dim) to equal embedding_dim")

        # Embedding and LSTMs compute in `precision` (weights stay float32 under mixed policies);
        # the output layer is always float32.
        self.embedding = Embedding(vocab_size, config.embedding_dim, word_dropout=config.word_dropout,
                                   name="embedding", dtype=precision, **zeros)
        self.lstms = [
            LSTM(config.hidden_dim, return_sequences=True, return_state=True, impl=config.lstm_impl,
                 weight_drop=config.weight_drop, proj_size=config.proj_size, name=f"lstm_{i}", dtype=precision,
                 **lstm_zeros)
            for i in range(config.num_layers)
        ]
        # lm_1b's LSTM-2048-512 projects its output the same way (there, inside the cell). The
        # projection and the last dropout make the softmax's input: float32 under any policy
        # (in bfloat16 they cost the demo validation perplexity under mixed_bfloat16).
        self.projection = (keras.layers.Dense(self.projection_dim, use_bias=False, name="projection",
                                              kernel_initializer=self._matrix_init, dtype="float32")
                           if self.projection_dim else None)
        self.embedding_dropout = config.embedding_dropout
        rates = [self.embedding_dropout] + [config.dropout] * config.num_layers
        self.dropouts = [keras.layers.Dropout(rate, name=f"dropout_{i}",
                                              dtype=precision if i < config.num_layers else "float32")
                         for i, rate in enumerate(rates)]
        self.loss_tracker = keras.metrics.Mean(name="loss")  # `test_step`'s (Keras' evaluate)

    def build(self, input_shape: Any = None) -> None:
        # Named weights owned by the model; they are read only by the losses, so they must be
        # created here, before training, not lazily inside train_step.
        if not self.tie_weights:
            self._softmax_w = self.add_weight(
                shape=(self.vocab_size, self.output_dim), initializer=self._matrix_init, name="softmax_w",
                dtype="float32")
        bias_init = ("zeros" if self._output_bias is None
                     else keras.initializers.Constant(tf.constant(self._output_bias, tf.float32)))
        self.softmax_b = self.add_weight(shape=(self.vocab_size,), initializer=bias_init, name="softmax_b",
                                         dtype="float32")
        self.embedding.build((None, None))
        width = self.embedding_dim
        for lstm in self.lstms:
            lstm.build((None, None, width))
            width = self.state_width
        if self.projection is not None:
            self.projection.build((None, None, self.state_width))
        self.built = True

    @property
    def softmax_w(self) -> keras.Variable:
        """The [V, output_dim] output matrix; with `tie_weights`, the embedding matrix itself (one
        variable: both of its uses gather rows, so its gradient stays row-sparse)."""
        return self.embedding.embeddings if self.tie_weights else self._softmax_w

    @property
    def output_weights(self) -> tuple[keras.Variable, keras.Variable]:
        """(softmax_w, softmax_b): the output layer's two variables."""
        return self.softmax_w, self.softmax_b

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker]

    def call(self, tokens: tf.Tensor, training: bool = False, initial_state: State | None = None,
             return_state: bool = False) -> Any:
        """Output vectors [B, T, output_dim] in float32 (and the final `State` if asked)."""
        z, _, state = self.forward(tokens, training, initial_state)
        return (z, state) if return_state else z

    def forward(self, tokens: tf.Tensor, training: bool = False, initial_state: State | None = None
                ) -> tuple[tf.Tensor, tf.Tensor, State]:
        """(the softmax's input [B, T, output_dim] float32, the same before its dropout, the
        final `State`): what `call` returns, and what the activation penalties need."""
        z = self._dropout(0, self.embedding(tokens, training=training), training)  # (B, T, E)
        hs, cs = [], []
        raw = z
        for i, lstm in enumerate(self.lstms):
            init = None
            if initial_state is not None:
                init = [tf.cast(initial_state[0][i], z.dtype), tf.cast(initial_state[1][i], z.dtype)]
            z, h, c = lstm(z, initial_state=init, training=training)  # (B, T, H)
            if self.projection is not None and i == self.num_layers - 1:
                z = self.projection(z)  # (B, T, P)
            raw = z
            z = self._dropout(i + 1, z, training)
            hs.append(tf.cast(h, tf.float32))
            cs.append(tf.cast(c, tf.float32))
        # The losses run in float32 even under a mixed-precision policy (log-Q needs it).
        return tf.cast(z, tf.float32), raw, (tf.stack(hs), tf.stack(cs))

    def _dropout(self, index: int, x: tf.Tensor, training: bool) -> tf.Tensor:
        """Dropout layer `index` on x [B, T, D]: one mask element per value, or with
        `locked_dropout` one per sequence and feature. Under tf.distribute each replica keeps
        its rows of the global batch's mask (`regularize.batch_dropout`), so N replicas train
        like one device; on one device unlocked dropout is Keras' Dropout itself."""
        layer = self.dropouts[index]
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        if not training or layer.rate == 0 or (replicas == 1 and not self.locked_dropout):
            return layer(x, training=training)
        return batch_dropout(x, layer.rate, layer.seed_generator, locked=self.locked_dropout)

    # ---- losses -------------------------------------------------------------------------------

    def logits(self, hidden: tf.Tensor) -> tf.Tensor:
        """Full-softmax logits [..., V] of hidden states [..., H]."""
        return softmax.logits(hidden, self.softmax_w, self.softmax_b)

    def full_nll(self, hidden: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """Exact negative log-likelihood per position [N], in row blocks (`softmax.full_nll`)."""
        return softmax.full_nll(hidden, targets, self.softmax_w, self.softmax_b, self.vocab_size)

    def nll_sum(self, tokens: tf.Tensor, targets: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(sum of exact negative log-likelihoods, number of predicted tokens) of one batch."""
        hidden = self(tokens, training=False)
        flat_h = tf.reshape(hidden, [-1, self.output_dim])
        nll = self.full_nll(flat_h, tf.reshape(targets, [-1]))
        flat_m = tf.reshape(mask, [-1])
        return tf.reduce_sum(nll * flat_m), tf.reduce_sum(flat_m)

    def compiled_sequence_nll(self) -> Callable[..., tuple[tf.Tensor, State]]:
        """`sequence_nll` compiled once for any batch, chunk length and state."""
        signature = [_IDS, _IDS, self.state_spec()]
        return self.compiled_fn("sequence_nll", lambda: tf.function(self.sequence_nll, input_signature=signature))

    def state_spec(self) -> tuple[tf.TensorSpec, tf.TensorSpec]:
        return (tf.TensorSpec([self.num_layers, None, self.state_width], tf.float32),
                tf.TensorSpec([self.num_layers, None, self.hidden_dim], tf.float32))

    def compiled_fn(self, name: str, make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """A compiled function of this model, made by `make()` on first use and kept under `name`
        (scoring's `sequence_nll`, generation's decoder), so later calls reuse its traces. Kept
        outside Keras' attribute tracking, which would walk it when saving."""
        cache = self.__dict__.setdefault("_compiled_fns", {})
        if name not in cache:
            cache[name] = make()
        return cache[name]

    def test_step(self, data: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        total, count = self.nll_sum(*data)
        # A weighted mean of per-token NLL: exact over the whole split, whatever the batching.
        self.loss_tracker.update_state(total / tf.maximum(count, 1.0), sample_weight=count)
        return {"loss": self.loss_tracker.result()}

    # ---- decoding -----------------------------------------------------------------------------

    def zero_state(self, batch_size: int | tf.Tensor) -> State:
        """The state before any token: zeros, as in training (every window starts from it)."""
        h = tf.zeros(tf.stack([self.num_layers, batch_size, self.state_width]), tf.float32)
        c = tf.zeros(tf.stack([self.num_layers, batch_size, self.hidden_dim]), tf.float32)
        return h, c

    def step(self, tokens: tf.Tensor, state: State, output_t: tf.Tensor | None = None) -> tuple[tf.Tensor, State]:
        """Log-probabilities of the next token after `tokens` [B, T], and the carried state.

        With the state from the previous call, the cost per new token is one LSTM step and one
        [H] x [H, V] product, whatever the length of the text so far. `output_t` is the output
        matrix transposed ([H, V], from `output_transposed`): a decoder that steps many times
        makes it once, since for a few rows the product with it ran 1.3-1.7x faster here than
        with the [V, H] matrix read transposed.
        """
        hidden, new_state = self(tokens, training=False, initial_state=state, return_state=True)
        last = hidden[:, -1, :]  # (B, H)
        logits = self.logits(last) if output_t is None else tf.matmul(last, output_t) + self.softmax_b
        return tf.nn.log_softmax(logits), new_state

    def output_transposed(self) -> tf.Tensor:
        """The [H, V] transpose of the output matrix (a copy), for `step`."""
        return tf.transpose(self.softmax_w.value)

    def sequence_nll(self, tokens: tf.Tensor, targets: tf.Tensor, state: State) -> tuple[tf.Tensor, State]:
        """Exact NLL [B, T] of `targets` after each prefix of `tokens`, starting from `state`,
        and the state after the last token: long texts are scored chunk by chunk with the
        state carried, which gives the same numbers as one pass over the whole text."""
        hidden, new_state = self(tokens, training=False, initial_state=state, return_state=True)
        shape = tf.shape(targets)
        nll = self.full_nll(tf.reshape(hidden, [-1, self.output_dim]), tf.reshape(targets, [-1]))
        return tf.reshape(nll, shape), new_state
