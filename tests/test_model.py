"""lmtrain.model.LanguageModel and its training step (lmtrain.fit.step): sampled and full losses, sparse
gradients, decoding and scoring with state, precision."""

import numpy as np
import pytest
import tensorflow as tf

from lmtrain.build import create_model
from lmtrain.config.files import config_from_dict
from lmtrain.config.resolve import resolve
from lmtrain.fit.trainer import create_step
from lmtrain.keras import softmax as softmax_module

V = 50


def _config(**model_changes):
    return resolve(config_from_dict({"tokenizer": {"vocab_size": V},
                                     "model": {"embedding_dim": 8, "hidden_dim": 12, "num_sampled": 10, "dropout": 0.0,
                                               "tie_weights": False, **model_changes}}), 1000)


def _model(**model_changes):
    return create_model(_config(**model_changes), V, list(range(V)))


def _trainer(optimizer, config=None, model=None, counts=None):
    """A model (made from `config`, unless given) and its training step as fit builds it."""
    config = config or _config()
    counts = counts or list(range(V))
    model = model or create_model(config, V, counts)
    return model, create_step(config, model, optimizer, V, counts)


def _batch(b=3, t=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (b, t)).astype(np.int32)
    y = rng.integers(0, V, (b, t)).astype(np.int32)
    m = np.ones((b, t), np.float32)
    m[-1, 2:] = 0  # a padded tail, as the last window of a split has
    return x, y, m


def test_full_softmax_test_step_equals_hand_computation():
    model = _model()
    model.compile(optimizer="adam")
    x, y, m = _batch()
    h = model(x).numpy()  # (B, T, H)
    w, b = model.softmax_w.numpy(), model.softmax_b.numpy()
    logits = h @ w.T + b  # (B, T, V)
    top = logits.max(-1, keepdims=True)
    log_z = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
    nll = log_z - np.take_along_axis(logits, y[..., None], -1)[..., 0]
    expected = (nll * m).sum() / m.sum()
    out = model.test_step((tf.constant(x), tf.constant(y), tf.constant(m)))
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)
    total, count = model.nll_sum(x, y, m)
    assert float(count) == m.sum() and float(total) == pytest.approx((nll * m).sum(), rel=1e-5)


def test_chunked_full_softmax_matches_one_block(monkeypatch):
    model = _model()
    x, y, m = _batch(b=4, t=7)
    whole = model.nll_sum(x, y, m)
    monkeypatch.setattr(softmax_module, "LOGITS_BUDGET", V * 3)  # 3 rows per block, ragged last block
    chunked = tf.function(model.nll_sum, input_signature=[tf.TensorSpec([None, 7], tf.int32)] * 2
                          + [tf.TensorSpec([None, 7], tf.float32)])(x, y, m)
    np.testing.assert_allclose([float(v) for v in chunked], [float(v) for v in whole], rtol=1e-5)


def test_sampled_gradients_touch_only_the_used_rows():
    """The gradients of the training step fit runs (`gradients`, clipped), not of a loss alone."""
    model, step = _trainer(tf.keras.optimizers.Adam(0.01))  # train.clip_norm 1 by default: clipped
    x, y, m = _batch()
    grads, out = step.gradients(tuple(tf.constant(a) for a in (x, y, m)))
    by_variable = {id(v): g for v, g in zip(model.trainable_variables, grads)}
    g_w, g_b, g_emb = (by_variable[id(v)] for v in (model.softmax_w, model.softmax_b, model.embedding.embeddings))
    for g in (g_w, g_b, g_emb):
        assert isinstance(g, tf.IndexedSlices)
    assert g_w.indices.shape[0] == y.size + 10  # B*T true rows + num_sampled negatives
    assert g_emb.indices.shape[0] == x.size and bool(out["finite"])


def test_sampled_train_step_lowers_the_loss():
    model, step = _trainer(tf.keras.optimizers.Adam(0.05))
    batch = tuple(tf.constant(a) for a in _batch())
    before = float(model.nll_sum(*batch)[0])
    for _ in range(30):
        logs = step.train_step(batch)
    assert float(logs["loss"]) > 0
    assert float(model.nll_sum(*batch)[0]) < 0.5 * before


def test_incremental_decoding_matches_the_whole_sequence():
    model = _model(num_layers=2)
    x, _, _ = _batch(b=1, t=6)
    whole = tf.nn.log_softmax(model.logits(model(x))).numpy()[0]  # (T, V)
    log_probs, state = model.step(tf.constant(x[:, :1]), model.zero_state(1))
    steps = [log_probs.numpy()[0]]
    for i in range(1, 6):
        log_probs, state = model.step(tf.constant(x[:, i:i + 1]), state)
        steps.append(log_probs.numpy()[0])
    np.testing.assert_allclose(np.stack(steps), whole, rtol=1e-4, atol=1e-5)


def test_scoring_in_chunks_with_carried_state_equals_one_pass():
    model = _model(num_layers=2)
    x, y, _ = _batch(b=2, t=9)
    whole, _ = model.sequence_nll(x, y, model.zero_state(2))
    state, parts = model.zero_state(2), []
    for lo, hi in [(0, 4), (4, 5), (5, 9)]:
        nll, state = model.sequence_nll(x[:, lo:hi], y[:, lo:hi], state)
        parts.append(nll.numpy())
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole.numpy(), rtol=1e-5, atol=1e-6)
    direct = -np.take_along_axis(tf.nn.log_softmax(model.logits(model(x))).numpy(), y[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(whole.numpy(), direct, rtol=1e-5, atol=1e-6)


def test_sampled_loss_equals_tensorflows_own():
    model, train = _trainer(tf.keras.optimizers.SGD())
    x, y, _ = _batch(b=4, t=6)
    h = tf.reshape(model(x), [-1, 12])
    labels = tf.reshape(tf.cast(y, tf.int64), [-1])
    step = tf.constant(3, tf.int64)
    rows = softmax_module.output_rows(model.softmax_w.value, model.softmax_b.value, labels, train.sampler, step)
    ours = softmax_module.sampled_nll(h, rows)  # the maths of the training step (`gradients`)
    theirs = tf.nn.sampled_softmax_loss(
        weights=model.softmax_w, biases=model.softmax_b, labels=labels[:, None], inputs=h, num_sampled=10,
        num_classes=V, sampled_values=train.sampler(labels[:, None], step), remove_accidental_hits=True)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unique", [True, False])
def test_sampled_train_step_never_touches_all_vocabulary_rows(unique):
    from lmtrain.keras.optim import LazyAdam
    from lmtrain.keras.sampling import SAMPLER_SCOPE

    vocab = 997  # a size no other dimension has
    cfg = config_from_dict({"tokenizer": {"vocab_size": vocab},
                            "model": {"embedding_dim": 8, "hidden_dim": 12, "num_sampled": 10,
                                      "sampler_unique": unique}})
    model = create_model(resolve(cfg, 1000), vocab, list(range(vocab)))
    optimizer = LazyAdam()
    optimizer.build(model.trainable_variables)
    step = create_step(resolve(cfg, 1000), model, optimizer, vocab, list(range(vocab)))
    spec = [tf.TensorSpec([4, 5], tf.int32), tf.TensorSpec([4, 5], tf.int32), tf.TensorSpec([4, 5], tf.float32)]
    graph = tf.function(step.train_step).get_concrete_function(tuple(spec)).graph
    # No op may produce a V-sized tensor: not even a whole-variable read (ReadVariableOp), which
    # copies all V rows once a variable has been scatter-updated (TensorFlow's copy-on-read).
    allowed = {"Const", "Placeholder"}  # the sampler's [V] tables, captured as graph inputs
    sampler_ops = [op for op in graph.get_operations() if SAMPLER_SCOPE in op.name]
    assert sampler_ops
    # The unique draw ranks all ids: [V] numbers from the sampler's own table; of the variables
    # it reads only the step.
    wide = [(op.type, op.name, [t.shape for t in op.outputs]) for op in sampler_ops
            if any(t.shape.rank != 0 if op.type == "ReadVariableOp" else t.shape.rank not in (0, 1)
                   and t.shape[:1] != [1]  # searchsorted's own [1, n] reshapes
                   for t in op.outputs)]
    assert not wide, wide
    offenders = [
        (op.type, op.name) for op in graph.get_operations() if op.type not in allowed and op not in sampler_ops
        for t in op.outputs if t.shape.rank and t.shape[0] == vocab
    ]
    assert not offenders, offenders


def test_xla_compiled_train_step_matches_the_plain_one():
    x, y, m = (tf.constant(a) for a in _batch())
    (plain, plain_step), (compiled, compiled_step) = (_trainer(tf.keras.optimizers.SGD(0.1)) for _ in range(2))
    compiled.set_weights(plain.get_weights())
    tf.function(plain_step.train_step)((x, y, m))
    tf.function(compiled_step.train_step, jit_compile=True)((x, y, m))
    for a, b in zip(plain.weights, compiled.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("columns", [7, 50, 64])  # ragged last chunk, exactly V, more than V
def test_scoring_in_column_chunks_equals_the_cross_entropy(monkeypatch, columns):
    model = _model()
    rng = np.random.default_rng(1)
    model.softmax_b.assign(rng.normal(0, 2, V).astype(np.float32))  # a spread of logits
    hidden = tf.constant(rng.normal(0, 3, (23, 12)), tf.float32)
    targets = tf.constant(rng.integers(0, V, 23), tf.int32)
    monkeypatch.setattr(softmax_module, "SCORE_COLUMNS", columns)
    expected = softmax_module.block_nll(hidden, targets, model.softmax_w, model.softmax_b)
    got = softmax_module.score_block(hidden, targets, model.softmax_w, model.softmax_b)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    # and in row blocks too (3 rows per block at this budget)
    monkeypatch.setattr(softmax_module, "LOGITS_BUDGET", 3 * min(columns, V))
    blocked = tf.function(lambda h, t: model.full_nll(h, t),
                          input_signature=[tf.TensorSpec([None, 12]), tf.TensorSpec([None], tf.int32)])
    np.testing.assert_allclose(blocked(hidden, targets).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_unigram_output_bias_makes_the_untrained_model_the_unigram_model():
    """model.output_bias_init=unigram starts the bias at log Q of the training counts (add-one); with
    small weights the untrained model's full-softmax loss is then about the unigram model's
    entropy, where a zero bias gives log V."""
    counts = [100_000 // (k + 1) ** 2 for k in range(V)]  # steep: entropy well below log V
    q = np.asarray(counts, np.float64) + 1.0
    q /= q.sum()
    models = {}
    for kind in ("unigram", "zeros"):
        cfg = config_from_dict({"tokenizer": {"vocab_size": V},
                                "model": {"embedding_dim": 8, "hidden_dim": 12, "num_sampled": 10,
                                          "output_bias_init": kind}})
        models[kind] = create_model(resolve(cfg, 1000), V, counts)
    np.testing.assert_allclose(models["unigram"].softmax_b.numpy(), np.log(q), rtol=1e-5)
    assert not np.any(models["zeros"].softmax_b.numpy())
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (8, 30)).astype(np.int32)
    y = rng.choice(V, size=(8, 30), p=q).astype(np.int32)
    m = np.ones((8, 30), np.float32)
    loss = {kind: float(model.nll_sum(x, y, m)[0]) / m.size for kind, model in models.items()}
    entropy = float(-np.log(q[y]).mean())
    assert entropy < 0.8 * np.log(V)
    assert abs(loss["unigram"] - entropy) < 0.05 * entropy, (loss, entropy)
    assert abs(loss["zeros"] - np.log(V)) < 0.05 * np.log(V), loss


def test_mixed_bfloat16_runs_the_lstm_in_bfloat16_and_the_softmax_input_in_float32():
    """Under mixed_bfloat16 the embedding and LSTM compute in bfloat16, while the projection and
    the last dropout, which make the softmax's input, stay float32 (as the output layer does)."""
    cfg = config_from_dict({"tokenizer": {"vocab_size": V},
                            "model": {"embedding_dim": 8, "hidden_dim": 12, "num_sampled": 10, "tie_weights": True},
                            "train": {"precision": "mixed_bfloat16"}})
    model, step = _trainer(tf.keras.optimizers.Adam(0.05), resolve(cfg, 1000))
    assert model.embedding.compute_dtype == "bfloat16" and model.lstms[0].compute_dtype == "bfloat16"
    assert model.projection.compute_dtype == "float32" and model.dropouts[-1].compute_dtype == "float32"
    batch = tuple(tf.constant(a) for a in _batch())
    assert model(batch[0], training=False).dtype == tf.float32
    before = float(model.nll_sum(*batch)[0])
    for _ in range(30):
        step.train_step(batch)
    assert float(model.nll_sum(*batch)[0]) < 0.6 * before  # it trains (tied: a little slower)
