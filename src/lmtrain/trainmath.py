"""The language model's training step, the Keras custom-step contract: `train_step` on one device,
and its two halves, `gradients` (in each replica) and `apply_update` (from the cross-replica
context), which `lmtrain.distribute.train_step` runs under `tf.distribute`.

A mixin of `lmtrain.model.LanguageModel`, kept apart because it is a concern of its own: the
sampled (or full) loss of a batch with the activation penalties, the gradients summed over
replicas so N replicas give one device's update, the output layer's row gradients kept sparse,
clipping by the global norm, and the non-finite guard (a step that is not finite never touches
the weights or the optimizer state).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from lmtrain.keras import softmax
from lmtrain.keras.regularize import activation_penalty


class TrainStep:
    """`train_step`, `gradients`, `apply_update` and `step_logs` of `LanguageModel`."""

    def train_step(self, data: tuple[Any, ...]) -> dict[str, Any]:
        """One update on one device. `data` is (tokens, targets, mask), or with `train.stateful`
        also the state to start from; the logs then carry the state to start the next window
        from (truncated back-propagation: no gradient flows into the state given).

        Under `tf.distribute` the same two halves run in `distribute.train_step`: `gradients` in
        each replica, the update from the cross-replica context.
        """
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
        ctx = tf.distribute.get_replica_context()
        tokens, targets, mask = data[:3]  # (B, T) int32, (B, T) int32, (B, T) float32
        state = data[3] if len(data) > 3 else None
        variables = self.trainable_variables
        flat_m = tf.reshape(mask, [-1])
        count = tf.maximum(ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(flat_m)), 1.0)
        rows = None
        with tf.GradientTape() as tape:
            hidden, raw, new_state = self.forward(tokens, training=True, initial_state=state)
            flat_h = tf.reshape(hidden, [-1, self.output_dim])  # (B*T, H)
            flat_t = tf.reshape(targets, [-1])
            if self.softmax == "sampled":
                # Detached rows: their gradients come one by one, and `add_row_gradients` makes
                # the output layer's gradient of them (summing the negatives' over replicas first).
                rows = softmax.output_rows(self.softmax_w.value, self.softmax_b.value, flat_t, self.sampler,
                                           self.optimizer.iterations, detached=True)
                tape.watch(rows.trainable())
                nll = softmax.sampled_nll(flat_h, rows)
            else:
                nll = softmax.block_nll(flat_h, flat_t, self.softmax_w, self.softmax_b)
            local_sum = tf.reduce_sum(nll * flat_m)
            objective = local_sum / count
            if self.ar or self.tar:  # on this replica's tokens over the global count: replicas add up
                objective += activation_penalty(hidden, raw, self.ar, self.tar, mask, count)
            scaled = self.optimizer.scale_loss(objective)  # loss scaling under mixed_float16
        sources = variables + (rows.trainable() if rows is not None else [])
        grads = tape.gradient(scaled, sources)
        grads, row_grads = grads[:len(variables)], grads[len(variables):]
        if rows is not None:  # the targets' rows: gathered over replicas like the input lookup's
            grads = softmax.add_row_gradients(variables, grads, self.output_weights, row_grads[:2], rows.labels)
        # The negatives' rows are the same on every replica: summed densely, as one [S, H] block.
        sampled_grads = row_grads[2:]
        # One collective call for everything (TensorFlow packs it into few transfers).
        grads, sampled_grads, local_sum = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                                         (grads, sampled_grads, local_sum))
        if rows is not None:
            grads = softmax.add_row_gradients(variables, grads, self.output_weights, sampled_grads, rows.sampled)
        loss = local_sum / count
        # Under mixed_float16 the gradients are multiplied by the loss scale until the optimizer
        # unscales them, and an overflow there is routine (the LossScaleOptimizer skips it and
        # lowers the scale); so the clip limit is scaled too and only the loss is checked here.
        loss_scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        finite = tf.math.is_finite(loss)
        if self.clip_norm is not None:
            # clip_by_global_norm keeps IndexedSlices sparse (global_clipnorm would densify).
            limit = self.clip_norm * self.optimizer.dynamic_scale if loss_scaled else self.clip_norm
            grads, norm = tf.clip_by_global_norm(grads, limit)
        else:
            norm = tf.linalg.global_norm(grads)
        if not loss_scaled:
            finite = tf.logical_and(finite, tf.math.is_finite(norm))
        out = {"loss": loss, "count": count, "finite": finite}
        if state is not None:
            out["state"] = tuple(tf.stop_gradient(x) for x in new_state)
        return grads, out

    def apply_update(self, grads: list[Any]) -> tf.Tensor:
        """Apply gradients already summed over replicas (the optimizer does not sum them again)."""
        self.optimizer.apply(grads, self.trainable_variables)
        return tf.constant(True)

    def step_logs(self, out: dict[str, Any], applied: tf.Tensor) -> dict[str, Any]:
        """The step's logs; the loss is averaged over the logging interval by `loss_tracker`."""
        loss, count = out["loss"], out["count"]
        self.loss_tracker.update_state(tf.where(applied, loss, 0.0), sample_weight=tf.where(applied, count, 0.0))
        logs = {"loss": self.loss_tracker.result(), "applied": applied}
        if "state" in out:
            logs["state"] = out["state"]
        return logs
