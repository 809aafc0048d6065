"""lmtrain.keras: the sampled-softmax head and LazyAdam in a user's own Keras model."""

import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from lmtrain.keras import Embedding, LazyAdam, SampledSoftmax, SampledSoftmaxLoss
from lmtrain.keras import softmax as softmax_maths
from lmtrain.keras.loss import head_nll
from lmtrain.keras.sampling import (
    SAMPLER_SCOPE,
    CandidateSampler,
    log_uniform_proposal,
    unigram_log_prior,
    unigram_proposal,
)

V, T = 40, 6


def _data(n=48, seed=0):
    """A learnable language: each id is followed by (id * 3 + 1) mod V."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, V, (n, 1))
    seq = [start]
    for _ in range(T):
        seq.append((seq[-1] * 3 + 1) % V)
    ids = np.concatenate(seq, axis=1).astype("int32")
    return ids[:, :-1], ids[:, 1:]


def _lm(head, embedding=keras.layers.Embedding, mask_zero=False, vocab=V):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None,), dtype="int32"),
                             embedding(vocab, 16, mask_zero=mask_zero),
                             keras.layers.LSTM(24, return_sequences=True),
                             head])


def _cross_entropy(probs, y):
    return -np.log(np.take_along_axis(probs, y[..., None], -1)[..., 0])


def test_the_readme_snippet_runs_as_written(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Sampled softmax in your own Keras model", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # Tiny sizes: the widths and the number of negatives, nothing else.
    tiny = snippet.replace("Embedding(vocab_size, 256)", "Embedding(vocab_size, 16)").replace(
        "LSTM(1024,", "LSTM(24,").replace("num_sampled=1000", "num_sampled=10")
    assert tiny.count("16)") and tiny.count("LSTM(24,") and tiny.count("num_sampled=10)")
    x, y = _data()
    x_val, y_val = _data(16, seed=1)
    monkeypatch.chdir(tmp_path)  # the snippet saves lm.keras in the working directory
    scope = {"vocab_size": V, "x": x, "y": y, "x_val": x_val, "y_val": y_val}
    exec(compile(tiny, "README.md", "exec"), scope)
    model, head = scope["model"], scope["head"]
    assert isinstance(head, SampledSoftmax) and int(head.step.numpy()) == 2  # 48 rows, batches of 32
    loaded = keras.models.load_model(tmp_path / "lm.keras")
    np.testing.assert_allclose(loaded.predict(x[:2], verbose=0), model.predict(x[:2], verbose=0), rtol=1e-6)
    probs = model.predict(x_val, verbose=0)
    assert model.evaluate(x_val, y_val, verbose=0) == pytest.approx(_cross_entropy(probs, y_val).mean(), rel=1e-5)


@pytest.mark.slow
def test_fit_evaluate_predict_and_save_round_trip(tmp_path):
    vocab_size = V
    x, y = _data()
    x_val, y_val = _data(16, seed=1)
    keras.utils.set_random_seed(0)
    head = SampledSoftmax(vocab_size, num_sampled=10)
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              keras.layers.Embedding(vocab_size, 16),
                              keras.layers.LSTM(24, return_sequences=True),
                              head])
    model.compile(optimizer=LazyAdam(3e-2), loss=head.loss)
    before = model.evaluate(x_val, y_val, verbose=0)
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    loss = model.evaluate(x_val, y_val, verbose=0)
    probs = model.predict(x[:2], verbose=0)
    model.save(tmp_path / "lm.keras")
    loaded = keras.models.load_model(tmp_path / "lm.keras")
    assert before == pytest.approx(np.log(V), rel=0.05)
    assert loss < 0.5 * before  # the sampled training taught the full softmax
    assert history.history["loss"][-1] < history.history["loss"][0]
    # evaluate is the exact full-softmax cross-entropy of what predict returns
    full = model.predict(x_val, verbose=0)
    assert loss == pytest.approx(_cross_entropy(full, y_val).mean(), rel=1e-5)
    assert probs.shape == (2, T, V)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(loaded.predict(x[:2], verbose=0), probs, rtol=1e-6, atol=1e-7)
    assert loaded.evaluate(x_val, y_val, verbose=0) == pytest.approx(loss, rel=1e-6)
    # LazyAdam's state came back with it (its per-row step counters too)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 45
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the loaded model recompiled with the head's loss and trains on, from the same step
    assert int(loaded.layers[-1].step.numpy()) == int(head.step.numpy()) == 15 * 3
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert int(loaded.layers[-1].step.numpy()) == 48


def test_training_output_is_hidden_and_the_loss_is_tensorflows_sampled_softmax():
    head = SampledSoftmax(V, num_sampled=10, sampler="log_uniform", seed=5)
    hidden = tf.random.normal([3, T, 8], seed=1)
    out = head(hidden, training=True)
    assert out.shape == (3, T, 8)
    np.testing.assert_array_equal(out.numpy(), hidden.numpy())
    _, y = _data(3)
    sampler = CandidateSampler(log_uniform_proposal(V), 10, seed=5)  # what lmtrain fit draws with
    labels = tf.reshape(tf.cast(y, tf.int64), [-1, 1])
    theirs = tf.nn.sampled_softmax_loss(
        weights=head.kernel, biases=head.bias, labels=labels, inputs=tf.reshape(hidden, [-1, 8]), num_sampled=10,
        num_classes=V, sampled_values=sampler(labels, tf.constant(0, tf.int64)), remove_accidental_hits=True)
    ours = head_nll(head, tf.constant(y), out)
    np.testing.assert_allclose(ours.numpy().ravel(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert int(head.step.numpy()) == 1  # the next call draws the negatives of step 1


@pytest.mark.slow
def test_two_dimensional_features_in_a_functional_model():
    # The dense-features case: inputs [B, D], targets [B].
    rng = np.random.default_rng(0)
    features = rng.normal(size=(128, 12)).astype("float32")
    labels = (np.abs(features[:, :4]).argmax(-1) * 7).astype("int64")  # 4 of the V classes
    inputs = keras.Input((12,))
    head = SampledSoftmax(V, num_sampled=8, seed=0)
    model = keras.Model(inputs, head(keras.layers.Dense(16, activation="relu")(inputs)))
    model.compile(optimizer=LazyAdam(2e-2), loss=head.loss)
    before = model.evaluate(features, labels, verbose=0)
    model.fit(features, labels, epochs=10, batch_size=32, verbose=0)
    probs = model.predict(features, verbose=0)
    assert probs.shape == (128, V)
    loss = model.evaluate(features, labels, verbose=0)
    assert loss == pytest.approx(_cross_entropy(probs, labels).mean(), rel=1e-5)
    assert loss < 0.5 * before


@pytest.mark.slow
def test_masking_and_sample_weight_weight_the_loss_as_keras_does():
    head = SampledSoftmax(V, num_sampled=10, seed=0)
    model = _lm(head, mask_zero=True)
    model.compile(optimizer=LazyAdam(1e-2), loss=head.loss)
    x, y = _data(8)
    x = x.copy()
    x[:, :2] = 0  # padding: masked positions
    weights = np.repeat(np.linspace(0.5, 2.0, 8).astype("float32")[:, None], T, axis=1)  # (B, T)
    probs = model.predict(x, verbose=0)
    mask = (x != 0).astype("float32")
    # What Keras gives Dense(V, "softmax") + its own sparse cross-entropy on the same outputs.
    reference = keras.losses.SparseCategoricalCrossentropy()
    masked = tf.constant(probs)
    masked._keras_mask = tf.constant(x != 0)
    expected = float(reference(y, masked, sample_weight=weights))
    assert expected == pytest.approx((_cross_entropy(probs, y) * mask * weights).sum()
                                     / mask.sum(), rel=1e-5)
    got = model.evaluate(x, y, sample_weight=weights, batch_size=8, verbose=0)
    assert got == pytest.approx(expected, rel=1e-5)
    model.fit(x, y, sample_weight=weights, epochs=2, verbose=0)  # and trains with both


@pytest.mark.slow
def test_unigram_sampler_from_counts_or_adapt():
    x, y = _data()
    counts = np.bincount(y.ravel(), minlength=V)
    a = SampledSoftmax(V, num_sampled=10, counts=counts, seed=3)
    b = SampledSoftmax(V, num_sampled=10, sampler="unigram", seed=3)
    b.adapt(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))  # (x, y) pairs: the targets are counted
    np.testing.assert_array_equal(b.counts, counts)
    expected = CandidateSampler(unigram_proposal(counts), 10, seed=3).sample(tf.constant(4, tf.int64))
    for head in (a, b):
        np.testing.assert_array_equal(head.sampler.sample(tf.constant(4, tf.int64)).numpy(), expected.numpy())
    assert SampledSoftmax(V, num_sampled=10).get_config()["sampler"] is None
    # num_sampled left out: as lmtrain fit draws, an eighth of V within 1,024-4,096, kept in the config
    assert [SampledSoftmax(v).get_config()["num_sampled"] for v in (2000, 30_000, 100_000)] == [1024, 3750, 4096]
    model = _lm(b)
    model.compile(optimizer=LazyAdam(1e-2), loss=b.loss)
    model.fit(x, y, epochs=1, verbose=0)
    config = b.get_config()
    assert config["counts"] == counts.tolist() and config["sampler"] == "unigram"


@pytest.mark.slow
def test_stock_adam_and_xla_compiled_fit():
    x, y = _data()
    results = []
    for optimizer, jit in ((keras.optimizers.Adam(3e-2), False), (LazyAdam(3e-2), True), (LazyAdam(3e-2), False)):
        head = SampledSoftmax(V, num_sampled=10, seed=0)
        model = _lm(head)
        model.compile(optimizer=optimizer, loss=head.loss, jit_compile=jit)
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=8, batch_size=16, verbose=0)
        results.append((before, model.evaluate(x, y, verbose=0), model.get_weights()))
    for before, after, _ in results:
        assert after < 0.7 * before
    # XLA trains the same model as the plain step: same negatives, same maths
    for a, b in zip(results[1][2], results[2][2]):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)


@pytest.mark.slow
def test_lazy_adam_finalizes_rows_at_the_end_of_fit():
    x, y = _data()
    head = SampledSoftmax(V, num_sampled=5, seed=0)
    model = _lm(head)
    optimizer = LazyAdam(1e-2, global_clipnorm=1.0)
    model.compile(optimizer=optimizer, loss=head.loss)
    model.fit(x[:16], y[:16], epochs=1, batch_size=16, verbose=0)
    # After fit every row is up to date: nothing is pending, and the step counters say so.
    for v in model.trainable_variables:
        assert float(tf.reduce_max(tf.abs(optimizer.pending(v)))) == 0.0
    assert all(int(tf.reduce_min(s)) == int(optimizer.iterations) for s in optimizer._last_steps)


@pytest.mark.slow
def test_bad_uses_give_clear_errors():
    x, y = _data(8)
    with pytest.raises(ValueError, match="num_sampled.*vocab_size"):
        SampledSoftmax(V, num_sampled=V)
    with pytest.raises(ValueError, match=r"the default num_sampled \(1024\) needs a larger vocabulary; got vocab_size"):
        SampledSoftmax(V)  # V ids are too few for the default's 1,024 negatives
    with pytest.raises(ValueError, match="sampler must be one of"):
        SampledSoftmax(V, num_sampled=4, sampler="zipf")

    def compiled():  # a fresh model for each case: a failed trace leaves Keras' step half-built
        head = SampledSoftmax(V, num_sampled=10)
        model = _lm(head)
        model.compile(optimizer=LazyAdam(), loss=head.loss)
        return model

    # one-hot targets, as the classic answer fed them
    with pytest.raises(ValueError, match="integer class ids.*one-hot"):
        compiled().fit(x, keras.utils.to_categorical(y, V), verbose=0)
    with pytest.raises(ValueError, match="integer class ids.*one-hot"):
        compiled().evaluate(x, keras.utils.to_categorical(y, V), verbose=0)
    # a target id outside [0, V)
    bad = y.copy()
    bad[0, 0] = V + 3
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"integer class ids in \[0, 40\)"):
        compiled().fit(x, bad, verbose=0)
    # the head compiled with a stock loss
    stock = _lm(SampledSoftmax(V, num_sampled=10))
    stock.compile(optimizer=LazyAdam(), loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="loss=head.loss"):
        stock.fit(x, y, verbose=0)
    # head.loss used with another layer
    head = SampledSoftmax(V, num_sampled=10)
    other = _lm(keras.layers.Dense(V, activation="softmax"))
    other.compile(optimizer=LazyAdam(), loss=head.loss)
    with pytest.raises(ValueError, match="not that layer's output"):
        other.fit(x, y, verbose=0)
    other = _lm(keras.layers.Dense(V, activation="softmax"))
    other.compile(optimizer="adam", loss=SampledSoftmaxLoss())
    with pytest.raises(ValueError, match="not a SampledSoftmax layer's output"):
        other.evaluate(x, y, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_the_loss_in_float32(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        head = SampledSoftmax(V, num_sampled=10, seed=0)
        model = _lm(head)
        model.compile(optimizer=LazyAdam(3e-2), loss=head.loss)
        x, y = _data()
        half = policy.split("_")[1]
        assert model.layers[1].compute_dtype == half
        assert head.kernel.dtype == "float32"
        assert head(tf.zeros([1, 2, 24], half), training=True).dtype == tf.float32
        assert head.loss(tf.constant(y[:1, :2]), head(tf.zeros([1, 2, 24], half), training=True)).dtype == tf.float32
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=8, batch_size=16, verbose=0)
        assert model.evaluate(x, y, verbose=0) < 0.7 * before
        assert model.predict(x[:1], verbose=0).dtype == np.float32
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("embedding", [Embedding, keras.layers.Embedding])
def test_fit_train_step_never_touches_all_vocabulary_rows(embedding):
    vocab = 997  # a size no other dimension has
    head = SampledSoftmax(vocab, num_sampled=10, seed=0)
    model = keras.Sequential([keras.Input((None,), dtype="int32"), embedding(vocab, 8),
                              keras.layers.LSTM(12, return_sequences=True), head])
    model.compile(optimizer=LazyAdam(), loss=head.loss)
    model.optimizer.build(model.trainable_variables)
    spec = (tf.TensorSpec([4, 5], tf.int32), tf.TensorSpec([4, 5], tf.int32))
    graph = tf.function(model.train_step).get_concrete_function(spec).graph  # the step model.fit compiles
    sampler_ops = [op for op in graph.get_operations() if SAMPLER_SCOPE in op.name]
    assert sampler_ops
    wide = [(op.type, op.name) for op in graph.get_operations()
            if op.type not in ("Const", "Placeholder") and op not in sampler_ops
            for t in op.outputs if t.shape.rank and t.shape[0] == vocab]
    if embedding is Embedding:
        assert not wide, wide
    else:  # Keras' own Embedding reads its whole matrix (and nothing else is V-sized)
        assert wide and all(kind == "ReadVariableOp" and "embedding" in name for kind, name in wide), wide


@pytest.mark.slow
def test_mirrored_strategy_fit_on_two_logical_cpus(tmp_path):
    script = textwrap.dedent("""
        import numpy as np, keras, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from lmtrain.keras import LazyAdam, SampledSoftmax
        V = 40
        rng = np.random.default_rng(0)
        x = rng.integers(0, V, (64, 6)).astype("int32")
        y = (x * 3 + 1) % V
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            head = SampledSoftmax(V, num_sampled=10, seed=0)
            model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(V, 16),
                                      keras.layers.LSTM(24, return_sequences=True), head])
            model.compile(optimizer=LazyAdam(3e-2), loss=head.loss)
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=6, batch_size=16, verbose=0)
        after = model.evaluate(x, y, verbose=0)
        print("RESULT", strategy.num_replicas_in_sync, before, after, int(head.step.numpy()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    replicas, before, after, step = out.stdout.split("RESULT")[1].split()
    assert int(replicas) == 2
    assert float(after) < 0.7 * float(before)
    assert int(step) == 6 * 4  # one draw of negatives per global step, shared by the replicas


def _zipf_data(n=256, vocab=300, seed=0):
    """Zipfian ids in an arbitrary order (a permutation of the frequency ranks), as a vocabulary
    sorted alphabetically has them: what the log-uniform proposal gets wrong."""
    rng = np.random.default_rng(seed)
    order = np.random.default_rng(99).permutation(vocab)
    ranks = np.minimum(rng.zipf(1.2, (n, T + 1)), vocab) - 1
    ids = order[ranks].astype("int32")
    return ids[:, :-1], ids[:, 1:]


@pytest.mark.slow
def test_no_setup_head_counts_the_targets_and_trains_as_well_as_adapt():
    x, y = _zipf_data()
    x_val, y_val = _zipf_data(64, seed=1)
    losses = {}
    for name in ("running", "adapt, zero bias", "adapt"):
        keras.utils.set_random_seed(0)  # the head's initializer takes its seed when it is made
        head = SampledSoftmax(300, num_sampled=20, seed=0, bias_initializer="zeros" if "zero" in name else None)
        model = _lm(head, vocab=300)
        if name.startswith("adapt"):
            head.adapt(y)  # after build, before the first step: the default bias moves to the unigram
        want = unigram_log_prior(np.bincount(y.ravel(), minlength=300)) if name == "adapt" else np.zeros(300)
        np.testing.assert_allclose(head.bias.numpy(), want, rtol=1e-6)
        model.compile(optimizer=LazyAdam(2e-2), loss=head.loss)
        model.fit(x, y, epochs=3, batch_size=32, verbose=0)
        losses[name] = model.evaluate(x_val, y_val, verbose=0)
        # every target of every step was counted (in all modes; only the no-setup one draws from them)
        np.testing.assert_array_equal(head.target_counts.numpy(), 3 * np.bincount(y.ravel(), minlength=300))
    assert isinstance(SampledSoftmax(300, 20).get_config()["sampler"], type(None))
    # (TensorFlow's default proposal, log-uniform, gives 7.9 against 3.5 here: ids are not by frequency)
    assert losses["running"] < 1.05 * losses["adapt, zero bias"], losses
    # known counts start the bias at the unigram, as lmtrain fit does, and that trains better
    assert losses["adapt"] < losses["adapt, zero bias"], losses


@pytest.mark.slow
def test_no_setup_head_resumes_exactly_after_save_and_load(tmp_path):
    x, y = _zipf_data(128)
    head = SampledSoftmax(300, num_sampled=20, seed=0)
    model = _lm(head, vocab=300)
    model.compile(optimizer=LazyAdam(2e-2), loss=head.loss)
    model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    model.save(tmp_path / "lm.keras")
    loaded = keras.models.load_model(tmp_path / "lm.keras")
    np.testing.assert_array_equal(loaded.layers[-1].target_counts.numpy(), head.target_counts.numpy())
    for m in (model, loaded):  # the same negatives from the same counts: the same weights
        m.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a file written before target_counts existed still loads (its counts start at zero)
    old = SampledSoftmax(300, num_sampled=20, seed=0)
    old.build((None, None, 24))
    old.load_own_variables({"0": head.kernel.numpy(), "1": head.bias.numpy(), "2": np.int64(7)})
    assert int(old.step.numpy()) == 7 and not old.target_counts.numpy().any()
    # ... and one written before their sum was kept apart (the sum is then taken from them)
    counted = SampledSoftmax(300, num_sampled=20, seed=0)
    counted.build((None, None, 24))
    counted.load_own_variables({"0": head.kernel.numpy(), "1": head.bias.numpy(), "2": np.int64(7),
                                "3": head.target_counts.numpy()})
    assert float(counted.targets_counted.numpy()) == float(head.target_counts.numpy().sum()) > 0


def test_log_uniform_on_ids_not_sorted_by_frequency_warns_once():
    _, y = _zipf_data()
    head = SampledSoftmax(300, num_sampled=20, sampler="log_uniform")
    head.adapt(y)
    with pytest.warns(UserWarning, match="rank correlation of id and frequency.*only"):
        _ = head.sampler
    sorted_ids = SampledSoftmax(300, num_sampled=20, sampler="log_uniform", counts=np.arange(300)[::-1] * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _ = sorted_ids.sampler


def _tied_lm(vocab=V, width=16, project=True, embedding=keras.layers.Embedding, **head_args):
    keras.utils.set_random_seed(0)
    emb = embedding(vocab, width, name="tokens")
    head = SampledSoftmax(vocab, num_sampled=10, seed=0, tied_to=emb, **head_args)
    layers = [keras.Input((None,), dtype="int32"), emb, keras.layers.LSTM(24, return_sequences=True)]
    layers += [keras.layers.Dense(width, use_bias=False)] if project else []
    return keras.Sequential(layers + [head]), emb, head


@pytest.mark.slow
@pytest.mark.parametrize("embedding", [Embedding, keras.layers.Embedding])
def test_tied_head_shares_the_embedding_matrix_through_save_and_load(tmp_path, embedding):
    x, y = _data()
    model, emb, head = _tied_lm(embedding=embedding)
    assert head.kernel is emb.embeddings
    names = [v.path for v in model.trainable_variables]
    assert sum("tokens" in n for n in names) == 1 and not any("kernel" in n and "sampled" in n for n in names)
    model.compile(optimizer=LazyAdam(3e-2), loss=head.loss)
    before = model.evaluate(x, y, verbose=0)
    rows = emb.embeddings.numpy().copy()
    # one step's gradient reaches the matrix through both uses: the inputs' rows and the targets'
    model.fit(x[:16, :1], y[:16, :1] * 0 + 5, epochs=1, batch_size=16, verbose=0)
    changed = np.flatnonzero(np.abs(emb.embeddings.numpy() - rows).sum(1))
    assert 5 in changed and set(x[:16, 0]) <= set(changed)
    # That step was a probe, not data: the running counts (the logits' prior) forget its targets.
    head.target_counts.assign(np.zeros(V, np.float32))
    head.targets_counted.assign(0.0)
    model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.7 * before
    model.save(tmp_path / "tied.keras")
    loaded = keras.models.load_model(tmp_path / "tied.keras")
    loaded_head = loaded.layers[-1]
    assert loaded_head.kernel is loaded.layers[0].embeddings  # still one matrix
    np.testing.assert_allclose(loaded.predict(x[:2], verbose=0), model.predict(x[:2], verbose=0), rtol=1e-6)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert loaded_head.kernel is loaded.layers[0].embeddings


def test_tied_head_needs_inputs_as_wide_as_the_embedding():
    with pytest.raises(ValueError, match=r"input is 24 wide but the embedding's rows are 16 wide.*Dense\(16\)"):
        _tied_lm(project=False)
    with pytest.raises(ValueError, match="that embedding has 40 rows"):
        keras.Sequential([keras.Input((None,), dtype="int32"), emb := keras.layers.Embedding(V, 16),
                          SampledSoftmax(V + 1, num_sampled=10, tied_to=emb)])
    with pytest.raises(ValueError, match="tied_to must be a keras.layers.Embedding"):
        SampledSoftmax(V, num_sampled=10, tied_to=keras.layers.Dense(3))


def test_cli_tied_model_and_library_tied_model_give_the_same_loss():
    from lmtrain.build import create_model, training_loss
    from lmtrain.config.files import config_from_dict
    from lmtrain.config.resolve import resolve

    x, y = _data(8)
    counts = np.bincount(y.ravel(), minlength=V) + 1
    cfg = config_from_dict({"tokenizer": {"vocab_size": V},
                            "model": {"embedding_dim": 16, "hidden_dim": 24, "dropout": 0.0, "num_sampled": 10,
                                      "lstm_impl": "keras", "tie_weights": True},
                            "train": {"seed": 4}})
    cli_model = create_model(resolve(cfg, 1000), V, counts.tolist())
    _, sampler = training_loss(resolve(cfg, 1000), V, counts.tolist())
    assert cli_model.tie_weights
    library, emb, head = _tied_lm(counts=counts)
    head.seed = 4
    # the CLI model's weights, put where the library model keeps them
    emb.embeddings.assign(cli_model.embedding.embeddings)
    library.layers[1].set_weights(cli_model.lstms[0].get_weights())
    library.layers[2].set_weights(cli_model.projection.get_weights())
    head.bias.assign(tf.random.normal([V]))
    cli_model.softmax_b.assign(head.bias)
    step = tf.constant(3, tf.int64)
    head.step.assign(3)
    hidden = cli_model(tf.constant(x), training=True)
    rows = softmax_maths.output_rows(cli_model.softmax_w.value, cli_model.softmax_b.value, tf.reshape(y, [-1]),
                                     sampler, step)
    expected = softmax_maths.sampled_nll(tf.reshape(hidden, [-1, 16]), rows).numpy().mean()
    got = float(head.loss(tf.constant(y), library(tf.constant(x), training=True)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_the_library_imports_nothing_from_the_app():
    """`lmtrain.keras` is the library the app is built on: importing it (and using it) must not
    load the config schema, the training loop, the CLI or any other app module."""
    code = ("import sys, lmtrain.keras as lk; lk.SampledSoftmax(100, num_sampled=10); "
            "print(sorted(m for m in sys.modules if m.startswith('lmtrain.') and not m.startswith('lmtrain.keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_head_with_no_setup_becomes_the_unigram_model_of_its_targets_by_itself():
    """No counts, no adapt: the logits add the log of the targets' smoothed unigram as counted so
    far, in training and in predict alike, so with nothing else learned the head is the unigram
    model of what it was trained on (what adapt starts from)."""
    x, y = _data()
    y = np.where(np.arange(y.size).reshape(y.shape) % 3 == 0, 7, y)  # a skewed unigram: id 7 a third of all
    head = SampledSoftmax(V, num_sampled=10, seed=0, kernel_initializer="zeros")
    model = _lm(head)
    model.compile(optimizer=LazyAdam(0.0), loss=head.loss)  # nothing learned: only the targets counted
    assert model.evaluate(x, y, verbose=0) == pytest.approx(np.log(V), rel=1e-5)  # no counts yet: uniform
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    counts = np.bincount(y.ravel(), minlength=V) * 2.0  # two epochs
    np.testing.assert_array_equal(head.target_counts.numpy(), counts)
    pseudo = 0.1 * counts.sum() / V  # the prior's pseudo-count per id (PRIOR_SMOOTHING of the mean)
    prior = np.log(counts + pseudo) - np.log(counts.sum() + pseudo * V)
    np.testing.assert_allclose(head.logit_bias().numpy(), prior, rtol=1e-5, atol=1e-5)
    probs = model.predict(x[:2], verbose=0)
    np.testing.assert_allclose(probs, np.broadcast_to(np.exp(prior), probs.shape), rtol=1e-4)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(float(-prior[y].mean()), rel=1e-4)
    # adapt is for before training: after it, it would take the prior away from a trained head
    with pytest.raises(ValueError, match="adapt before training; this head has trained 6 steps with no counts"):
        head.adapt(y)
