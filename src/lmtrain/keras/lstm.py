"""An LSTM layer whose forward and backward passes are written for the CPU (`impl="fused"`).

Why: Keras 3's CPU path is a `while_loop` over `LSTMCell`, and TensorFlow's autodiff of that
loop costs several times its forward pass (`benchmarks/lstm_bench.py` times both). Autodiff keeps
two small GEMMs per step (input and recurrent
weights) and accumulates the weight gradients one step at a time (K = batch). The fused
version does what cuDNN and oneDNN do (hand-written back-propagation through time):
  forward   Z_x = X W + b for all steps as one GEMM; the loop keeps only h U per step and
            stores the activated gates and the cells;
  backward  the loop keeps only dz U^T per step (U^T materialised once: a `transpose_b` matmul
            inside the loop was much slower); after it, dW = X^T dZ, dU = H_prev^T dZ and
            dX = dZ W^T are single large GEMMs (M = B*T), which run faster per FLOP than the
            per-step ones.
Forward + backward then runs about twice as fast as Keras' loop on a CPU.

`LSTM` is `keras.layers.LSTM` with one more argument, `impl`; the weights (kernel [E, 4H],
recurrent_kernel [H, 4H], bias [4H], gates in the order i f c o), their names, the saved form
and every other argument are Keras' own, so a checkpoint trained with one implementation loads
into the other. Only the inner loop is replaced; initial states, `stateful`, `return_state`
and input dropout go through Keras' own code.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
import tensorflow as tf

from lmtrain.keras.regularize import (
    activation_penalty,
    batch_dropout,
    check_penalty,
    check_rate,
    keep_mask,
)

IMPLS = ("auto", "keras", "fused")
# The arguments of Keras' LSTMCell, which an LSTM layer hands to its cell.
_CELL_ARGS = frozenset(inspect.signature(keras.layers.LSTMCell.__init__).parameters) - {"self", "units", "kwargs"}


def choose_impl(impl: str) -> str:
    """`auto` -> `fused` on a machine without a GPU, `keras` (cuDNN) where TensorFlow sees one."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")
    if impl != "auto":
        return impl
    # Visible devices, not logical ones: listing logical devices would start the runtime, after
    # which a caller could no longer configure devices (tf.distribute on logical CPUs does).
    return "keras" if tf.config.get_visible_devices("GPU") else "fused"


def fused_lstm(x: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent_kernel: tf.Tensor,
               bias: tf.Tensor, matmul_dtype: tf.DType | None = None, output_dtype: tf.DType | None = None,
               projection: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One LSTM layer over x [B, T, E] from (h0 [B, R], c0 [B, H]): (outputs [B, T, R], h_T,
    c_T): the maths of `keras.layers.LSTMCell` (gates i f c o), with a hand-written gradient for
    x, the initial state and the weights.

    `projection` [H, P] makes it an LSTMP (Sak et al. 2014; lm_1b's LSTM-2048-512): the cell's
    output o * tanh(c) is projected to h = (o * tanh(c)) W_p of width R = P, which is both the
    output and what the next step reads (`recurrent_kernel` is then [P, 4H]). Without it R = H.

    The products run in `matmul_dtype` (default: x's); the gates, cell, states and their
    gradients in float32 (bfloat16 products run up to twice float32's rate with avx512_bf16,
    while bfloat16 elementwise ops are slower and the cell's sums lose precision). Outputs are in
    `output_dtype` (default: x's), the final states float32, the weights' gradients in their dtypes.
    """
    mm = tf.as_dtype(matmul_dtype or x.dtype)
    state = tf.float32 if mm != tf.float64 else tf.float64  # the elementwise dtype

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias, *projected):  # type: ignore[no-untyped-def]
        batch, steps, width = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        xs = tf.reshape(tf.transpose(tf.cast(x, mm), [1, 0, 2]), [-1, width])  # (T*B, E), time-major
        w, u = tf.cast(kernel, mm), tf.cast(recurrent_kernel, mm)
        w_p = tf.cast(projected[0], mm) if projected else None
        zx = tf.cast(tf.matmul(xs, w), state) + tf.cast(bias, state)  # (T*B, 4H)
        zx = tf.reshape(zx, [steps, batch, tf.shape(w)[1]])  # (T, B, 4H)
        h0s, c0s = tf.cast(h0, state), tf.cast(c0, state)
        h_last, c_last, gates, cells, hiddens = _forward(zx, h0s, c0s, u, w_p, mm, state, x.shape[1] == 1)

        def grad(d_out, d_h, d_c):  # type: ignore[no-untyped-def]
            d_out = tf.zeros_like(hiddens) if d_out is None else tf.transpose(tf.cast(d_out, state), [1, 0, 2])
            d_h = tf.zeros_like(h0s) if d_h is None else tf.cast(d_h, state)
            d_c = tf.zeros_like(c0s) if d_c is None else tf.cast(d_c, state)
            d_h0, d_c0, dz, dhs = _backward(d_out, d_h, d_c, gates, cells, c0s, u, w_p, mm, state)
            units = tf.shape(c0s)[1]
            d_bias = tf.reduce_sum(dz, 0)
            dz = tf.cast(dz, mm)
            h_prev = tf.cast(tf.reshape(tf.concat([h0s[None], hiddens[:-1]], 0), [-1, tf.shape(h0s)[1]]), mm)
            d_kernel = tf.matmul(xs, dz, transpose_a=True)  # (E, 4H)
            d_recurrent = tf.matmul(h_prev, dz, transpose_a=True)  # (R, 4H)
            d_x = tf.transpose(tf.reshape(tf.matmul(dz, w, transpose_b=True), [steps, batch, width]),
                               [1, 0, 2])  # (B, T, E)
            grads = [tf.cast(d_x, x.dtype), tf.cast(d_h0, h0.dtype), tf.cast(d_c0, c0.dtype),
                     tf.cast(d_kernel, kernel.dtype), tf.cast(d_recurrent, recurrent_kernel.dtype),
                     tf.cast(d_bias, bias.dtype)]
            if projected:  # dW_p = M^T dH, M the cell outputs o * tanh(c) of every step
                o = gates[:, :, 3 * units:]
                m = tf.cast(tf.reshape(o * tf.tanh(cells), [-1, units]), mm)  # (T*B, H)
                grads.append(tf.cast(tf.matmul(m, tf.cast(dhs, mm), transpose_a=True), projected[0].dtype))  # (H, P)
            return grads

        outputs = tf.cast(tf.transpose(hiddens, [1, 0, 2]), output_dtype or x.dtype)
        return (outputs, h_last, c_last), grad

    extra = () if projection is None else (projection,)
    return run(x, h0, c0, kernel, recurrent_kernel, bias, *extra)


def _forward(zx: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, u: tf.Tensor, w_p: tf.Tensor | None, mm: tf.DType,
             state: tf.DType, one_step: bool) -> tuple[tf.Tensor, ...]:
    """The recurrence of `fused_lstm` over zx [T, B, 4H] (the input part of every step's gates):
    (h_T, c_T, gates [T, B, 4H] activated, cells [T, B, H], hiddens [T, B, R]). Per step only
    h U ([B, R] x [R, 4H]) and, with a projection, m W_p ([B, H] x [H, P])."""
    steps = tf.shape(zx)[0]

    def step(t, h, c, gates, cells, hiddens):  # type: ignore[no-untyped-def]
        z = zx[t] + tf.cast(tf.matmul(tf.cast(h, mm), u), state)  # (B, 4H)
        i, f, g, o = tf.split(z, 4, axis=1)
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c = f * c + i * g
        h = o * tf.tanh(c)  # (B, H): the cell's output, projected to (B, P) in an LSTMP
        if w_p is not None:
            h = tf.cast(tf.matmul(tf.cast(h, mm), w_p), state)
        return (t + 1, h, c, gates.write(t, tf.concat([i, f, g, o], 1)), cells.write(t, c), hiddens.write(t, h))

    def array() -> tf.TensorArray:
        return tf.TensorArray(state, size=steps)

    if one_step:  # one step (decoding): a loop's frames cost more than the step here
        _, h_last, c_last, gates, cells, hiddens = step(0, h0, c0, array(), array(), array())
    else:
        _, h_last, c_last, gates, cells, hiddens = tf.while_loop(
            lambda t, *_: t < steps, step, (tf.constant(0), h0, c0, array(), array(), array()),
            maximum_iterations=steps)
    return h_last, c_last, gates.stack(), cells.stack(), hiddens.stack()


def _backward(d_out: tf.Tensor, d_h: tf.Tensor, d_c: tf.Tensor, gates: tf.Tensor, cells: tf.Tensor, c0: tf.Tensor,
              u: tf.Tensor, w_p: tf.Tensor | None, mm: tf.DType, state: tf.DType) -> tuple[tf.Tensor, ...]:
    """Back-propagation through time of `_forward`: (dh_0, dc_0, dz [T*B, 4H], dh [T*B, R] of
    every step). The loop keeps only dz U^T per step (and dh W_p^T in an LSTMP); U^T and W_p^T
    are materialised once (a `transpose_b` matmul inside the loop was much slower here)."""
    steps, units = tf.shape(gates)[0], tf.shape(cells)[2]
    c_prev = tf.concat([c0[None], cells[:-1]], 0)  # (T, B, H)
    recurrent_t = tf.transpose(u)  # (4H, R)
    projection_t = tf.transpose(w_p) if w_p is not None else None  # (P, H)

    def step(t, dh_next, dc_next, dzs, *dhs):  # type: ignore[no-untyped-def]
        i, f, g, o = tf.split(gates[t], 4, axis=1)
        tanh_c = tf.tanh(cells[t])
        dh = d_out[t] + dh_next  # (B, R)
        dm = dh if projection_t is None else tf.cast(tf.matmul(tf.cast(dh, mm), projection_t), state)  # (B, H)
        dc = dc_next + dm * o * (1 - tanh_c * tanh_c)
        dz = tf.concat([dc * g * i * (1 - i), dc * c_prev[t] * f * (1 - f),
                        dc * i * (1 - g * g), dm * tanh_c * o * (1 - o)], 1)  # (B, 4H)
        dh_prev = tf.cast(tf.matmul(tf.cast(dz, mm), recurrent_t), state)
        # an LSTMP keeps every step's dh for dW_p; a plain LSTM carries nothing more
        return (t - 1, dh_prev, dc * f, dzs.write(t, dz), *(a.write(t, dh) for a in dhs))

    arrays = [tf.TensorArray(state, size=steps) for _ in range(1 if w_p is None else 2)]
    _, d_h0, d_c0, dzs, *dhs = tf.while_loop(lambda t, *_: t >= 0, step, (steps - 1, d_h, d_c, *arrays),
                                             maximum_iterations=steps)
    dh_all = tf.reshape(dhs[0].stack(), [-1, tf.shape(d_h)[1]]) if dhs else None
    return d_h0, d_c0, tf.reshape(dzs.stack(), [-1, 4 * units]), dh_all


@keras.saving.register_keras_serializable(package="lmtrain")
class LSTMPCell(keras.layers.LSTMCell):
    """`keras.layers.LSTMCell` with a recurrent projection (LSTMP, Sak et al. 2014): the cell's
    output o * tanh(c) [units] is projected by `projection_kernel` [units, proj_size] to h
    [proj_size], which is the cell's output and the state the next step reads. The state is
    (h [proj_size], c [units]); `recurrent_kernel` is [proj_size, 4 * units]. Keras' own path of
    `lmtrain.keras.LSTM(units, proj_size=P)`; the fused path computes the same with these weights.

    Args:
        units: the cell's width (c and the gates).
        proj_size: the width of h, from 1 to units - 1.
        **kwargs: every argument of `keras.layers.LSTMCell`.
    """

    def __init__(self, units: int, proj_size: int, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.proj_size = check_proj_size(proj_size, units)
        self.state_size = [self.proj_size, self.units]
        self.output_size = self.proj_size

    def build(self, input_shape: Any) -> None:
        units, size = self.units, 4 * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], size), name="kernel",
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight(shape=(self.proj_size, size), name="recurrent_kernel",
                                                initializer=self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint)
        self.bias = None
        if self.use_bias:
            base = self.bias_initializer

            def forget_bias_of_one(shape: Any, dtype: Any = None) -> Any:  # gates i f c o: f starts at 1
                return keras.ops.concatenate([base((units,), dtype), keras.ops.ones((units,), dtype),
                                              base((2 * units,), dtype)])

            self.bias = self.add_weight(shape=(size,), name="bias",
                                        initializer=forget_bias_of_one if self.unit_forget_bias else base,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint)
        self.projection_kernel = self.add_weight(shape=(units, self.proj_size), name="projection_kernel",
                                                 initializer=self.kernel_initializer)
        self.built = True

    def call(self, inputs: Any, states: Any, training: bool = False) -> Any:
        cell_output, (_, c) = super().call(inputs, states, training=training)  # o * tanh(c) [units]
        h = keras.ops.matmul(cell_output, self.projection_kernel)  # [proj_size]
        return h, [h, c]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "proj_size": self.proj_size}


def check_proj_size(proj_size: Any, units: int) -> int:
    """A recurrent projection's width: an integer from 1 to units - 1, or a ValueError naming it."""
    if isinstance(proj_size, bool) or not isinstance(proj_size, int) or not 0 < proj_size < units:
        raise ValueError(f"LSTM proj_size must be an integer from 1 to units - 1 ({units - 1}): the projection "
                         f"narrows the cell's output; got {proj_size!r}")
    return proj_size


@keras.saving.register_keras_serializable(package="lmtrain")
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` with a choice of implementation: `impl="auto" | "keras" | "fused"`.

    `fused` runs `fused_lstm` (forward and backward written for the CPU; about 2x faster to
    train than Keras' loop there). `keras` is Keras' own layer (cuDNN on a GPU). `auto`, the
    default, takes `fused` when TensorFlow sees no GPU and `keras` when it does. Both compute the
    same function with the same weights, so a model can be trained with one and run with the
    other. `fused` needs what cuDNN needs: tanh / sigmoid activations, a bias,
    `recurrent_dropout=0`, `go_backwards=False`, `unroll=False`, and no mask; with `auto` a
    call that has a mask runs Keras' loop instead.

    The regularisation of AWD-LSTM (Merity et al. 2017), which Keras' LSTM lacks, in training
    only and with the same masks in both implementations:
        weight_drop: DropConnect on the recurrent kernel, one mask per call (batch) shared by
            every step and row. The kernel stays one matrix, so the fused loop (and cuDNN, with
            `impl="keras"` on a GPU) run at full speed, unlike `recurrent_dropout`.
        dropout: Keras' own input dropout, already one mask per sequence (variational).
        output_dropout: locked dropout on the output sequence (one mask per sequence and unit,
            shared across time).
        ar, tar: activation regularisation (`ar` x mean square of the dropped outputs) and
            temporal activation regularisation (`tar` x mean square of the step-to-step change
            of the undropped outputs), added with `add_loss`, so `model.fit` minimises them.
    The masks come from the cell's seed generator, a variable of the layer: a checkpoint of it
    resumes with the same masks.

    `proj_size=P` makes it an LSTMP (`LSTMPCell`: lm_1b's LSTM-2048-512, PyTorch's
    `nn.LSTM(proj_size=)`): the output and the state h have width P, c keeps `units`, and the
    recurrent product and the softmax after it are units / P times cheaper. Keras' path runs the
    cell in its loop (cuDNN has no projection), the fused one the same maths in one kernel.

    Example:
        lstm = lmtrain.keras.LSTM(512, return_sequences=True)            # fused on CPU
        lstm = lmtrain.keras.LSTM(512, return_sequences=True, impl="keras")
        lstm = lmtrain.keras.LSTM(512, return_sequences=True, weight_drop=0.5, output_dropout=0.4, ar=2, tar=1)
        lstm = lmtrain.keras.LSTM(2048, proj_size=512, return_sequences=True)  # lm_1b's LSTM-2048-512
    """

    def __init__(self, units: int, impl: str = "auto", weight_drop: float = 0.0, output_dropout: float = 0.0,
                 ar: float = 0.0, tar: float = 0.0, proj_size: int | None = None, **kwargs: Any) -> None:
        if proj_size is None:
            super().__init__(units, **kwargs)
        else:
            self._init_projected(units, proj_size, kwargs)
        self.proj_size = proj_size
        self.impl = impl
        self._chosen = choose_impl(impl)
        self.weight_drop = check_rate("LSTM weight_drop", weight_drop)
        self.output_dropout = check_rate("LSTM output_dropout", output_dropout)
        self.ar, self.tar = check_penalty("LSTM ar", ar), check_penalty("LSTM tar", tar)
        if (self.ar or self.tar) and not self.return_sequences:
            raise ValueError("LSTM ar / tar penalise the output sequence; they need return_sequences=True")
        if impl == "fused" and (reason := self._unsupported()):
            raise ValueError(f"LSTM(impl='fused') cannot run {reason}; use impl='keras'")

    def _init_projected(self, units: int, proj_size: int, kwargs: dict[str, Any]) -> None:
        """What `keras.layers.LSTM.__init__` does, with an `LSTMPCell` for its cell: the cell takes
        the cell arguments, the layer (an RNN) the rest. No cuDNN: it has no projection."""
        cell_args = {k: kwargs.pop(k) for k in list(kwargs) if k in _CELL_ARGS}
        kwargs.pop("use_cudnn", None)
        cell = LSTMPCell(units, check_proj_size(proj_size, units), dtype=kwargs.get("dtype"),
                         trainable=kwargs.get("trainable", True), name="lstm_cell",
                         implementation=kwargs.pop("implementation", 2), **cell_args)
        keras.layers.RNN.__init__(self, cell, **kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=3)
        self.use_cudnn = False

    def _unsupported(self) -> str | None:
        cell = self.cell
        if cell.activation not in (keras.activations.tanh, keras.ops.tanh):
            return f"activation={getattr(cell.activation, '__name__', cell.activation)!r} (needs tanh)"
        if cell.recurrent_activation not in (keras.activations.sigmoid, keras.ops.sigmoid):
            return "a recurrent_activation other than sigmoid"
        if not cell.use_bias:
            return "use_bias=False"
        if cell.recurrent_dropout:
            return f"recurrent_dropout={cell.recurrent_dropout}"
        if self.go_backwards:
            return "go_backwards=True"
        if self.unroll:
            return "unroll=True"
        return None

    def call(self, sequences: Any, initial_state: Any = None, mask: Any = None, training: bool = False) -> Any:
        out = super().call(sequences, initial_state=initial_state, mask=mask, training=training)
        if not (training and (self.output_dropout or self.ar or self.tar)):
            return out
        raw = out[0] if isinstance(out, (list, tuple)) else out
        dropped = batch_dropout(raw, self.output_dropout, self.cell.seed_generator, locked=True)
        if self.ar or self.tar:
            self.add_loss(activation_penalty(dropped, raw, self.ar, self.tar))
        return [dropped, *out[1:]] if isinstance(out, (list, tuple)) else dropped

    def inner_loop(self, sequences: Any, initial_state: Any, mask: Any, training: bool = False) -> Any:
        # Weight drop: one mask on the recurrent kernel for the whole call (every step and row),
        # drawn before either implementation runs, so both compute the same function.
        recurrent = self.cell.recurrent_kernel
        dropped = None
        if training and self.weight_drop:
            dropped = recurrent.value * keep_mask(tf.shape(recurrent.value), self.weight_drop, self.cell.seed_generator,
                                                  recurrent.dtype)
        if self._chosen != "fused" or self._unsupported() is not None or mask is not None:
            if mask is not None and self.impl == "fused":
                raise ValueError("LSTM(impl='fused') does not take a mask; use impl='auto' or 'keras'")
            if dropped is None:
                return super().inner_loop(sequences, initial_state, mask, training=training)
            # Keras' cell and its cuDNN path read `cell.recurrent_kernel`: they see the dropped
            # matrix for this call (set past Keras' attribute tracking, and put back after).
            object.__setattr__(self.cell, "recurrent_kernel", tf.cast(dropped, self.compute_dtype))
            try:
                return super().inner_loop(sequences, initial_state, mask, training=training)
            finally:
                object.__setattr__(self.cell, "recurrent_kernel", recurrent)
        if training and self.cell.dropout:  # one input mask for every step, as Keras' cuDNN path
            sequences = sequences * self.cell.get_dropout_mask(sequences[:, 0, :])[:, None, :]
        # Under a mixed policy the products run in the compute dtype and the cell in float32
        # (see fused_lstm); the weights are passed as they are stored.
        weights = [self.cell.kernel.value, recurrent.value if dropped is None else dropped, self.cell.bias.value]
        projection = self.cell.projection_kernel.value if self.proj_size else None
        h0, c0 = (tf.cast(s, tf.float32) if s.dtype != tf.float64 else s for s in initial_state)
        outputs, h, c = fused_lstm(sequences, h0, c0, *weights, matmul_dtype=sequences.dtype,
                                   output_dtype=h0.dtype, projection=projection)
        return h, outputs, [h, c]

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "impl": self.impl, "weight_drop": self.weight_drop,
                  "output_dropout": self.output_dropout, "ar": self.ar, "tar": self.tar}
        if self.proj_size:  # absent without one: a file saved before the argument existed loads as it was
            config["proj_size"] = self.proj_size
        return config
