"""LazyAdam: the Adam maths on touched rows only, checked against a NumPy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lmtrain.keras.optim import LazyAdam, pending_applied

B1, B2, EPS, LR = 0.9, 0.999, 1e-7, 0.01


def _reference(w0, steps, flush_at=None):
    """Lazy Adam with momentum catch-up, in NumPy: duplicate rows summed (squares summed for the
    second moment, as Keras' Adam does with IndexedSlices); a row touched again
    after n skipped steps first gets those steps' gradient-free Adam updates in closed form."""
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    last = np.zeros(w0.shape[0], np.int64)
    r = B1 / np.sqrt(B2)

    def alpha(t):
        return LR * np.sqrt(1 - B2**t) / (1 - B1**t)

    def skip(rows, n, t):
        n = n[:, None].astype(np.float64)
        w[rows] -= alpha(t) * m[rows] / (np.sqrt(v[rows]) + EPS) * r * (1 - r**n) / (1 - r)
        m[rows] *= B1**n
        v[rows] *= B2**n

    for t, (rows, grads) in enumerate(steps, start=1):
        g, g2 = np.zeros_like(w0), np.zeros_like(w0)
        np.add.at(g, rows, grads)
        np.add.at(g2, rows, grads**2)  # second moment: sum of the occurrences' squares
        touched = np.unique(rows)
        skip(touched, t - last[touched] - 1, t)
        m[touched] = B1 * m[touched] + (1 - B1) * g[touched]
        v[touched] = B2 * v[touched] + (1 - B2) * g2[touched]
        w[touched] -= alpha(t) * m[touched] / (np.sqrt(v[touched]) + EPS)
        last[touched] = t
    if flush_at is not None:
        everything = np.arange(w0.shape[0])
        skip(everything, flush_at - last, flush_at + 1)
    return w


def _steps(rng, n=5, vocab=10, width=3):
    out = []
    for _ in range(n):
        rows = rng.integers(0, vocab // 2, 6)  # rows >= vocab/2 are never touched
        rows[1] = rows[0]  # always a repeated index
        out.append((rows, rng.normal(size=(6, width)).astype(np.float32)))
    return out


def test_matches_numpy_reference_and_leaves_untouched_rows():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(10, 3)).astype(np.float32)
    steps = _steps(rng)
    var = keras.Variable(w0)
    opt = LazyAdam(learning_rate=LR, beta_1=B1, beta_2=B2, epsilon=EPS)
    opt.build([var])
    apply = tf.function(lambda rows, g: opt.apply([tf.IndexedSlices(g, rows, tf.constant([10, 3]))], [var]))
    for rows, grads in steps:
        apply(tf.constant(rows), tf.constant(grads))
    np.testing.assert_allclose(var.numpy(), _reference(w0, steps), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(var.numpy()[5:], w0[5:])
    assert np.all(opt._momentums[0].numpy()[5:] == 0)


@pytest.mark.parametrize("block_rows", [16384, 3], ids=["whole", "blocks"])
def test_pending_steps_track_dense_adam(monkeypatch, block_rows):
    from lmtrain.keras import optim

    monkeypatch.setattr(optim, "PENDING_ROWS", block_rows)  # 3: four blocks of rows, a ragged last one
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(10, 3)).astype(np.float32)
    steps = _steps(rng, n=40)
    var = keras.Variable(w0)
    opt = LazyAdam(learning_rate=LR, beta_1=B1, beta_2=B2, epsilon=EPS)
    opt.build([var])
    for rows, grads in steps:
        opt.apply([tf.IndexedSlices(tf.constant(grads), tf.constant(rows), tf.constant([10, 3]))], [var])
    state = var.numpy().copy()
    with pending_applied(opt, [var]):
        np.testing.assert_allclose(var.numpy(), _reference(w0, steps, flush_at=40), rtol=1e-4, atol=1e-5)
        flushed = var.numpy().copy()
    np.testing.assert_array_equal(var.numpy(), state)  # the training state is left as it was
    var.assign(flushed)

    # Keras' dense Adam on the same IndexedSlices: lazy Adam with the catch-up stays close to it.
    dense_var = keras.Variable(w0)
    dense = keras.optimizers.Adam(learning_rate=LR, beta_1=B1, beta_2=B2, epsilon=EPS)
    for rows, grads in steps:
        dense.apply([tf.IndexedSlices(tf.constant(grads), tf.constant(rows), tf.constant([10, 3]))], [dense_var])
    moved = np.abs(dense_var.numpy() - w0).max()
    gap = np.abs(var.numpy() - dense_var.numpy()).max()
    assert gap < 0.05 * moved, (gap, moved)


def test_dense_gradients_get_plain_adam():
    w0 = np.ones((4, 2), np.float32)
    a, b = keras.Variable(w0), keras.Variable(w0)
    lazy, dense = LazyAdam(learning_rate=LR), keras.optimizers.Adam(learning_rate=LR)
    for step in range(3):
        g = tf.constant(np.full((4, 2), step + 1.0, np.float32))
        lazy.apply([g], [a])
        dense.apply([g], [b])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_no_full_vocabulary_read_or_write_in_the_graph():
    var = keras.Variable(np.zeros((1000, 4), np.float32))
    opt = LazyAdam(learning_rate=LR)
    opt.build([var])
    fn = tf.function(lambda rows, g: opt.apply([tf.IndexedSlices(g, rows, tf.constant([1000, 4]))], [var]))
    graph = fn.get_concrete_function(tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 4])).graph
    ops = {op.type for op in graph.get_operations()}
    assert {"ResourceGather", "ResourceScatterUpdate", "ResourceScatterSub"} <= ops
    # whole-variable reads and writes touch only scalars (the step counter), never the [V, D] rows
    for op in graph.get_operations():
        if op.type in ("ReadVariableOp", "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"):
            assert all(t.shape.rank == 0 for t in list(op.inputs[1:]) + list(op.outputs)), op.name


def test_save_and_restore_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(10, 3)).astype(np.float32)
    steps = _steps(rng, n=6)

    def make():
        var = keras.Variable(w0.copy())
        opt = LazyAdam(learning_rate=LR)
        opt.build([var])
        return var, opt

    def run(var, opt, chunk):
        for rows, grads in chunk:
            opt.apply([tf.IndexedSlices(tf.constant(grads), tf.constant(rows), tf.constant([10, 3]))], [var])

    var, opt = make()
    run(var, opt, steps[:3])
    tf.train.Checkpoint(var=var, opt=opt).write(str(tmp_path / "ckpt"))
    run(var, opt, steps[3:])

    var2, opt2 = make()
    tf.train.Checkpoint(var=var2, opt=opt2).read(str(tmp_path / "ckpt")).assert_consumed()
    assert int(opt2.iterations) == 3
    run(var2, opt2, steps[3:])
    np.testing.assert_array_equal(var2.numpy(), var.numpy())


@pytest.mark.parametrize("rate", [0.01, keras.optimizers.schedules.CosineDecay(0.01, 10)], ids=["constant", "schedule"])
def test_slot_positions_match_the_built_optimizer(rate):
    shapes = [(5, 3), (5,), (2, 4)]
    variables = [keras.Variable(np.zeros(shape, np.float32), name=f"w{i}") for i, shape in enumerate(shapes)]
    opt = LazyAdam(learning_rate=rate)
    unbuilt = [opt.slot_positions(i, len(variables)) for i in range(len(variables))]
    opt.build(variables)
    for i, (m, v, last) in enumerate(unbuilt):
        assert opt.variables[m] is opt._momentums[i] and opt.variables[v] is opt._velocities[i]
        assert opt.variables[last] is opt._last_steps[i]
