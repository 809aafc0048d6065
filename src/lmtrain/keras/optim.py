"""`LazyAdam`: Adam that keeps sparse gradients sparse, for any Keras model and for `lmtrain fit`.

Under sampled softmax the gradients of the [V, H] output matrix, its bias and the [V, E]
embedding are `tf.IndexedSlices` touching only B*T + num_sampled rows. Keras 3 `Adam` densifies
them (`gradient - m` is dense), so every step rewrites all V x D weights and both moment slots:
at V = 100k that costs several times the LSTM itself (keras-team/keras#19992; measured by
benchmarks/step_bench.py). `LazyAdam` updates only the touched rows: it reads their moments with
a resource gather and writes moments and weights back with scatter ops. Dense gradients (the LSTM
weights) get Keras' own Adam update.

Plain lazy Adam (TF Addons' LazyAdam, PyTorch's SparseAdam) skips what dense Adam does to a row
in the steps it is not touched: its momentum keeps moving it for ~1/(1-beta_1) steps while the
moments decay. For a rare word sampled once as a negative, that momentum tail is most of its
total update. So each row remembers the last step that touched it, and when it is touched again
(or for evaluation, see `pending`) the skipped steps are applied in closed form: with no
gradient, after j skipped steps m = beta_1^j m and v = beta_2^j v, so the skipped updates sum to
a geometric series in r = beta_1 / sqrt(beta_2):
    w -= alpha * m / (sqrt(v) + eps) * r (1 - r^n) / (1 - r),   then  m *= beta_1^n, v *= beta_2^n.
This reproduces Keras' Adam on the same gradients except that the skipped steps use the current
bias-correction factor alpha instead of their own (and eps is applied to the undecayed v); the
tests bound the gap. See `_sum_duplicates` for the second moment of repeated rows.

Gradient clipping: `LazyAdam(global_clipnorm=...)` / `clipnorm=` clip with
`tf.clip_by_global_norm` / `tf.clip_by_norm`, which keep `IndexedSlices` sparse (Keras' own
clipping would densify them). `lmtrain fit` clips in its training step instead, after
summing over replicas, with the variants in `lmtrain.build` that take gradients already summed.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="lmtrain")
class LazyAdam(keras.optimizers.Adam):
    """Adam whose updates from `IndexedSlices` gradients read and write only the touched rows.

    A standard Keras optimizer (same arguments as `keras.optimizers.Adam`, except `amsgrad`):
    use it in `model.compile` with any model. Dense gradients get Keras' Adam update; row
    gradients (an `Embedding`'s, a `SampledSoftmax` head's) update only their rows, and each row
    catches up in closed form on the momentum steps it skipped when it is next touched. At the
    end of `model.fit` (`finalize_variable_values`) every row catches up, so `evaluate`,
    `predict` and `save` see the weights dense Adam would have given them.

    Example:
        model.compile(optimizer=LazyAdam(1e-3), loss=head.loss)
    """

    def build(self, var_list: Sequence[keras.Variable]) -> None:
        if self.built:
            return
        super().build(var_list)
        if self.amsgrad:
            raise ValueError("LazyAdam does not support amsgrad")
        # Per row: the last step (1-based) whose update reached it; 0 = never.
        self._last_steps = [
            self.add_variable(shape=(v.shape[0] if len(v.shape) else 1,), initializer="zeros", dtype="int64",
                              name=f"{v.name}_last_step")
            for v in var_list
        ]

    def update_step(self, gradient: Any, variable: keras.Variable, learning_rate: Any) -> None:
        index = self._get_variable_index(variable)
        step = self.iterations + 1
        if not isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable, learning_rate)
            self.assign(self._last_steps[index], tf.fill(self._last_steps[index].shape, step))
            return
        dtype = variable.dtype
        rows, grad, grad_sq = _sum_duplicates(gradient)  # (R,), (R, ...), (R, ...): R unique rows
        grad, grad_sq = tf.cast(grad, dtype), tf.cast(grad_sq, dtype)
        m, v = self._momentums[index], self._velocities[index]
        # `.value` is the backend tf.Variable: gathering from it is a ResourceGather of R rows,
        # where gathering from the Keras variable would read all V rows first.
        m_rows, v_rows = tf.gather(m.value, rows), tf.gather(v.value, rows)
        skipped = step - tf.gather(self._last_steps[index].value, rows) - 1  # (R,) steps not applied
        alpha = self._alpha(learning_rate, dtype)
        catch_up, m_rows, v_rows = self._skip(m_rows, v_rows, skipped, alpha)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        m_rows = beta_1 * m_rows + (1 - beta_1) * grad
        v_rows = beta_2 * v_rows + (1 - beta_2) * grad_sq
        delta = catch_up + alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        # IndexedSlices values make Keras' TF backend use scatter_update / scatter_sub.
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(delta, rows))
        self.assign(self._last_steps[index], tf.IndexedSlices(tf.fill(tf.shape(rows), step), rows))

    def pending(self, variable: keras.Variable) -> tf.Tensor:
        """The weight change every row still owes for the steps it skipped (dense, all rows).

        Evaluation subtracts it from a copy of the weights: the state itself is left as is, so
        a run that was stopped and resumed follows exactly the path of one that never stopped.
        """
        catch_up, _, _ = self._owed(variable)
        return catch_up

    def finalize_variable_values(self, var_list: Sequence[keras.Variable]) -> None:
        """Bring every row up to date (Keras calls this at the end of `fit`): the skipped steps
        are applied for good, so the weights are what dense Adam would hold, and the rows'
        moments and step counters say so (training on continues from there)."""
        super().finalize_variable_values(var_list)
        for variable in var_list:
            index = self._get_variable_index(variable)
            catch_up, m, v = self._owed(variable)
            variable.assign_sub(catch_up)
            self._momentums[index].assign(m)
            self._velocities[index].assign(v)
            self._last_steps[index].assign(tf.fill(self._last_steps[index].shape, self.iterations))

    def _owed(self, variable: keras.Variable) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        return self.owed(m, v, self._last_steps[index].value)

    def owed(self, m: Any, v: Any, last_step: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(the weight change rows still owe, their decayed m, their decayed v) for the given
        rows' moments and last steps, at the current step: the optimizer need not be built, so
        a loader can read the slots from a checkpoint a block of rows at a time."""
        m, v = tf.convert_to_tensor(m), tf.convert_to_tensor(v)
        skipped = self.iterations - tf.convert_to_tensor(last_step)  # (R,) steps since last touched
        return self._skip(m, v, skipped, self._alpha(self.learning_rate, m.dtype))

    def slot_positions(self, index: int, count: int) -> tuple[int, int, int]:
        """Where variable `index` (of `count` trained) keeps its momentum, velocity and last-step
        counter among `optimizer.variables`, built or not: the order `build` creates them in is
        iterations, the learning rate (unless it is a schedule), Adam's two slots per variable,
        then ours. A test checks it against a built optimizer."""
        base = 2 if isinstance(self._learning_rate, keras.Variable) else 1
        return base + 2 * index, base + 1 + 2 * index, base + 2 * count + index

    def _clip_gradients(self, grads: list[Any]) -> list[Any]:
        # TensorFlow's clipping keeps IndexedSlices sparse; Keras' own densifies them.
        if self.global_clipnorm and self.global_clipnorm > 0:
            return tf.clip_by_global_norm(grads, self.global_clipnorm)[0]
        if self.clipnorm and self.clipnorm > 0:
            return [None if g is None else tf.clip_by_norm(g, self.clipnorm) for g in grads]
        return super()._clip_gradients(grads)

    def _alpha(self, learning_rate: Any, dtype: Any) -> tf.Tensor:
        t = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return tf.cast(learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, t)) / (1 - tf.pow(beta_1, t))

    def _skip(self, m: tf.Tensor, v: tf.Tensor, skipped: tf.Tensor, alpha: tf.Tensor
              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(weight change of `skipped` gradient-free Adam steps, decayed m, decayed v)."""
        dtype = m.dtype
        n = tf.reshape(tf.cast(skipped, dtype), [-1] + [1] * (len(m.shape) - 1))  # broadcast over rows
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        r = beta_1 / tf.sqrt(beta_2)
        series = r * (1 - tf.pow(r, n)) / (1 - r)  # sum_{j=1..n} r^j
        catch_up = alpha * m / (tf.sqrt(v) + self.epsilon) * series
        return catch_up, m * tf.pow(beta_1, n), v * tf.pow(beta_2, n)


def _sum_duplicates(grad: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Unique rows, the summed gradient of each, and the sum of its occurrences' squares.

    The first moment takes the summed gradient (a token seen twice counts twice). The second
    moment takes the sum of squares, which is what Keras' Adam computes from the same
    IndexedSlices (`square` acts on each occurrence before densifying): a frequent row then
    gets smaller steps than with (sum)^2. It matters: with (sum)^2 the demo's validation
    perplexity was 260 vs dense Adam's 174 at step 572.
    """
    rows, position = tf.unique(grad.indices)
    n = tf.shape(rows)[0]
    summed = tf.math.unsorted_segment_sum(grad.values, position, n)
    squares = tf.math.unsorted_segment_sum(tf.square(grad.values), position, n)
    return rows, summed, squares


@contextlib.contextmanager
def pending_applied(optimizer: keras.optimizers.Optimizer, variables: Sequence[keras.Variable]) -> Iterator[None]:
    """Within the block, lazily updated rows hold the values dense Adam would give them now.

    Used around validation; outside the block the training state is untouched, to the bit (the
    rows' values before are put back, not recomputed). A [V, D] matrix is caught up and put back
    `PENDING_ROWS` rows at a time, its rows before kept in host memory: at lm_1b's 793k words a
    whole-matrix catch-up held several [V, D] temporaries (+10 GB beside the weights).
    """
    lazy = lazy_adam_of(optimizer)
    saved = [_catch_up(lazy, v, keep=True) for v in variables] if lazy is not None else []
    try:
        yield
    finally:
        for v, blocks in zip(variables, saved):
            for rows, before in blocks:
                if rows is None:
                    v.assign(before)
                else:
                    v.value.scatter_update(tf.IndexedSlices(tf.constant(before), rows))


def apply_pending(optimizer: keras.optimizers.Optimizer, variables: Sequence[keras.Variable]) -> None:
    """Apply the skipped steps for good (for a model restored only to evaluate or generate)."""
    lazy = lazy_adam_of(optimizer)
    if lazy is not None:
        for v in variables:
            _catch_up(lazy, v, keep=False)


# Rows of a [V, D] weight caught up at once (`pending_applied`, `apply_pending`).
PENDING_ROWS = 16384


def _catch_up(lazy: "LazyAdam", variable: keras.Variable, keep: bool) -> list[tuple[Any, Any]]:
    """Give `variable`'s rows the steps they skipped, in place: a whole small weight at once, a
    [V, D] one a block of rows at a time (scatter: no second copy of it). With `keep`, returns
    what to put back: (row ids or None for the whole weight, the values before)."""
    if len(variable.shape) < 2 or variable.shape[0] <= PENDING_ROWS:
        before = tf.identity(variable.value) if keep else None
        variable.assign_sub(lazy.pending(variable))
        return [(None, before)] if keep else []
    index = lazy._get_variable_index(variable)
    m, v, last = lazy._momentums[index].value, lazy._velocities[index].value, lazy._last_steps[index].value
    kept = []
    for lo in range(0, variable.shape[0], PENDING_ROWS):
        rows = tf.range(lo, min(lo + PENDING_ROWS, variable.shape[0]))
        if keep:
            kept.append((rows, tf.gather(variable.value, rows).numpy()))
        owed, _, _ = lazy.owed(tf.gather(m, rows), tf.gather(v, rows), tf.gather(last, rows))
        variable.value.scatter_sub(tf.IndexedSlices(owed, rows))
    return kept


def lazy_adam_of(optimizer: keras.optimizers.Optimizer) -> LazyAdam | None:
    """The LazyAdam behind `optimizer` (LossScaleOptimizer wraps it), or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner if isinstance(inner, LazyAdam) else None


# The warm-up's share of the run when no length is given (make compare measured 50 of 1000 steps).
WARMUP_SHARE = 0.05


def warmup_cosine(peak: float, total_steps: int, warmup_steps: int | None = None, min_ratio: float = 0.1
                  ) -> keras.optimizers.schedules.CosineDecay:
    """`lmtrain fit`'s default learning rate, for any Keras optimizer: a linear rise from 0 to
    `peak` over `warmup_steps` (None: 5% of the run), then cosine decay to `peak * min_ratio` at
    `total_steps`. The warm-up is what lets Adam start at a peak twice the usual 0.002 (make
    compare: 4-19% lower test perplexity with this schedule and tied weights than with a constant
    0.002). Keras' `CosineDecay`, so it saves with the optimizer."""
    warmup = _warmup_steps("warmup_cosine", peak, total_steps, warmup_steps, min_ratio)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        decay_steps=max(total_steps - warmup, 1),
        alpha=min_ratio,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


@keras.saving.register_keras_serializable(package="lmtrain")
class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, hold it, then cosine decay to `peak * min_ratio` over the last
    `decay_steps` of `total_steps` (warmup-stable-decay, as in MiniCPM, Hu et al. 2024)."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int, decay_steps: int, min_ratio: float) -> None:
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)
        self.decay_steps, self.min_ratio = int(decay_steps), float(min_ratio)

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        warm = self.peak * step / max(self.warmup_steps, 1)
        start = float(self.total_steps - self.decay_steps)
        t = tf.clip_by_value((step - start) / max(self.decay_steps, 1), 0.0, 1.0)
        decayed = self.peak * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + tf.cos(math.pi * t)))
        return tf.where(step < self.warmup_steps, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps, "min_ratio": self.min_ratio}


def warmup_stable_decay(peak: float, total_steps: int, warmup_steps: int | None = None, decay_share: float = 0.2,
                        min_ratio: float = 0.1) -> WarmupStableDecay:
    """A linear warm-up over `warmup_steps` (None: 5% of the run), the peak held, then cosine
    decay to `peak * min_ratio` over the last `decay_share` of the run. A short run spends most
    of its steps at the peak, where `warmup_cosine` would already be decaying."""
    warmup = _warmup_steps("warmup_stable_decay", peak, total_steps, warmup_steps, min_ratio)
    if not 0 <= decay_share <= 1:
        raise ValueError(f"warmup_stable_decay: decay_share must be between 0 and 1, got {decay_share!r}")
    decay = min(round(decay_share * total_steps), total_steps - warmup)
    return WarmupStableDecay(peak, total_steps, warmup, decay, min_ratio)


def _warmup_steps(name: str, peak: float, total_steps: int, warmup_steps: int | None, min_ratio: float) -> int:
    """The arguments both warm-up schedules share, checked; the warm-up's length in steps
    (None: 5% of the run), shorter than the run."""
    if not peak > 0:
        raise ValueError(f"{name}: peak must be a learning rate > 0, got {peak!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"{name}: total_steps must be an integer >= 1 (the optimizer steps of the whole "
                         f"run, e.g. epochs * batches per epoch), got {total_steps!r}")
    if warmup_steps is not None and (not isinstance(warmup_steps, int) or warmup_steps < 0):
        raise ValueError(f"{name}: warmup_steps must be an integer >= 0 or None, got {warmup_steps!r}")
    if not 0 <= min_ratio <= 1:
        raise ValueError(f"{name}: min_ratio must be between 0 and 1, got {min_ratio!r}")
    steps = warmup_steps if warmup_steps is not None else round(WARMUP_SHARE * total_steps)
    return min(steps, total_steps - 1)
