"""The training step of `lmtrain.model.LanguageModel`, as a component that takes the model: the
sampled (or full) loss of a batch with the activation penalties, the gradients summed over
replicas so N replicas give one device's update, the output layer's row gradients kept sparse,
clipping by the global norm, the non-finite guard (a step that is not finite never touches the
weights or the optimizer state), and the update.

Why it is not part of the model: the model owns its layers, weights, forward pass, scoring and
decoding, which `eval`, `generate`, `export` and `lmtrain.load` use without any of this; the
step owns what only training needs (the loss, the negatives' sampler, the clip, the optimizer).
`fit` compiles `train_step` on one device; under `tf.distribute`, `lmtrain.fit.distribute` runs
its two halves, `gradients` in each replica and `apply_update` from the cross-replica context.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from lmtrain.keras import softmax
from lmtrain.keras.regularize import activation_penalty
from lmtrain.keras.softmax import SamplerFn
from lmtrain.model import LanguageModel


class TrainStep:
    """One training step of `model` with `optimizer`.

    Args:
        model: the language model; the step reads what it declares: its trainable variables,
            `forward`, `output_dim`, the output layer (`softmax_w`, `softmax_b`,
            `output_weights`) and the activation penalties (`ar`, `tar`).
        optimizer: built for the model's trainable variables.
        loss: "sampled" (the sampled softmax, negatives from `sampler`) or "full".
        sampler: the negatives' sampler of the sampled loss (None for the full one).
        clip_norm: clip the gradients to this global norm (None: no clipping).
    """

    def __init__(self, model: LanguageModel, optimizer: keras.optimizers.Optimizer, loss: str = "sampled",
                 sampler: SamplerFn | None = None, clip_norm: float | None = None) -> None:
        if loss not in ("sampled", "full"):
            raise ValueError(f"loss must be 'sampled' or 'full', got {loss!r}")
        if loss == "sampled" and sampler is None:
            raise ValueError("loss='sampled' needs a candidate sampler")
        self.model, self.optimizer = model, optimizer
        self.loss, self.sampler, self.clip_norm = loss, sampler, clip_norm
        # The training loss over the logging interval (the loop reads and resets it).
        self.loss_tracker = keras.metrics.Mean(name="train_loss")

    @property
    def negatives(self) -> int | None:
        """Negatives a sampled step draws (None: the full softmax scores every id)."""
        return self.sampler.num_sampled if self.loss == "sampled" else None

    def train_step(self, data: tuple[Any, ...]) -> dict[str, Any]:
        """One update on one device. `data` is (tokens, targets, mask), or with `train.stateful`
        also the state to start from; the logs then carry the state to start the next window
        from (truncated back-propagation: no gradient flows into the state given)."""
        grads, out = self.gradients(data)
        # A non-finite step never touches the weights or the optimizer state (train.on_nan).
        applied = tf.cond(out["finite"], lambda: self.apply_update(grads), lambda: tf.constant(False))
        return self.step_logs(out, applied)

    def gradients(self, data: tuple[Any, ...]) -> tuple[list[Any], dict[str, Any]]:
        """Forward and backward on this replica's share of the batch, then summed over replicas.

        Returns the gradients of the global batch's mean loss (clipped), and the global loss,
        token count and finiteness flag, so every replica holds the same values and takes the
        same decision. On one device the replica context is TensorFlow's default one and the
        sums are no-ops. Dense gradients are summed; row gradients (IndexedSlices) are
        gathered, except the negatives' rows, which every replica shares and which are summed
        densely (see `softmax.add_row_gradients`): so N replicas give the update one device gives.
        """
        model, ctx = self.model, tf.distribute.get_replica_context()
        tokens, targets, mask = data[:3]  # (B, T) int32, (B, T) int32, (B, T) float32
        state = data[3] if len(data) > 3 else None
        variables = model.trainable_variables
        flat_m = tf.reshape(mask, [-1])
        count = tf.maximum(ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(flat_m)), 1.0)
        rows = None
        with tf.GradientTape() as tape:
            hidden, raw, new_state = model.forward(tokens, training=True, initial_state=state)
            flat_h = tf.reshape(hidden, [-1, model.output_dim])  # (B*T, H)
            flat_t = tf.reshape(targets, [-1])
            if self.loss == "sampled":
                # Detached rows: their gradients come one by one, and `add_row_gradients` makes
                # the output layer's gradient of them (summing the negatives' over replicas first).
                rows = softmax.output_rows(model.softmax_w.value, model.softmax_b.value, flat_t, self.sampler,
                                           self.optimizer.iterations, detached=True)
                tape.watch(rows.trainable())
                nll = softmax.sampled_nll(flat_h, rows)
            else:
                nll = softmax.block_nll(flat_h, flat_t, model.softmax_w, model.softmax_b)
            local_sum = tf.reduce_sum(nll * flat_m)
            objective = local_sum / count
            if model.ar or model.tar:  # on this replica's tokens over the global count: replicas add up
                objective += activation_penalty(hidden, raw, model.ar, model.tar, mask, count)
            scaled = self.optimizer.scale_loss(objective)  # loss scaling under mixed_float16
        sources = variables + (rows.trainable() if rows is not None else [])
        grads = tape.gradient(scaled, sources)
        grads, row_grads = grads[:len(variables)], grads[len(variables):]
        if rows is not None:  # the targets' rows: gathered over replicas like the input lookup's
            grads = softmax.add_row_gradients(variables, grads, model.output_weights, row_grads[:2], rows.labels)
        # The negatives' rows are the same on every replica: summed densely, as one [S, H] block.
        sampled_grads = row_grads[2:]
        # One collective call for everything (TensorFlow packs it into few transfers).
        grads, sampled_grads, local_sum = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                                         (grads, sampled_grads, local_sum))
        if rows is not None:
            grads = softmax.add_row_gradients(variables, grads, model.output_weights, sampled_grads, rows.sampled)
        grads, finite = self._clipped(grads, tf.math.is_finite(local_sum / count))
        out = {"loss": local_sum / count, "count": count, "finite": finite}
        if state is not None:
            out["state"] = tuple(tf.stop_gradient(x) for x in new_state)
        return grads, out

    def _clipped(self, grads: list[Any], finite: tf.Tensor) -> tuple[list[Any], tf.Tensor]:
        """The gradients clipped by their global norm, and whether the step is finite.

        Under mixed_float16 the gradients are multiplied by the loss scale until the optimizer
        unscales them, and an overflow there is routine (the LossScaleOptimizer skips it and
        lowers the scale); so the clip limit is scaled too and only the loss is checked.
        """
        loss_scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        if self.clip_norm is not None:
            # clip_by_global_norm keeps IndexedSlices sparse (global_clipnorm would densify).
            limit = self.clip_norm * self.optimizer.dynamic_scale if loss_scaled else self.clip_norm
            grads, norm = tf.clip_by_global_norm(grads, limit)
        else:
            norm = tf.linalg.global_norm(grads)
        if not loss_scaled:
            finite = tf.logical_and(finite, tf.math.is_finite(norm))
        return grads, finite

    def apply_update(self, grads: list[Any]) -> tf.Tensor:
        """Apply gradients already summed over replicas (the optimizer does not sum them again)."""
        self.optimizer.apply(grads, self.model.trainable_variables)
        return tf.constant(True)

    def step_logs(self, out: dict[str, Any], applied: tf.Tensor) -> dict[str, Any]:
        """The step's logs; the loss is averaged over the logging interval by `loss_tracker`."""
        loss, count = out["loss"], out["count"]
        self.loss_tracker.update_state(tf.where(applied, loss, 0.0), sample_weight=tf.where(applied, count, 0.0))
        logs = {"loss": self.loss_tracker.result(), "applied": applied}
        if "state" in out:
            logs["state"] = out["state"]
        return logs
