"""lmtrain.keras.lstm: the fused LSTM computes what keras.layers.LSTM computes, gradients included,
with the same weights, and the CLI model can switch between the two."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from lmtrain.build import create_model
from lmtrain.config.files import config_from_dict
from lmtrain.config.resolve import resolve
from lmtrain.keras.lstm import LSTM, choose_impl


def _pair(units, width, **kwargs):
    """A Keras-loop LSTM and a fused one with the same random weights (bias not zero)."""
    a = LSTM(units, return_sequences=True, return_state=True, impl="keras", **kwargs)
    b = LSTM(units, return_sequences=True, return_state=True, impl="fused", **kwargs)
    a.build((None, None, width))
    b.build((None, None, width))
    rng = np.random.default_rng(units * 10 + width)
    for wa, wb in zip(a.weights, b.weights):
        value = rng.normal(0, 0.5, wa.shape).astype(np.float32)
        wa.assign(value)
        wb.assign(value)
    return a, b


def _run(layer, x, state):
    with tf.GradientTape() as tape:
        tape.watch([x, *state])
        out, h, c = layer(x, initial_state=state)
        # weights unlike each other, so every output, h and c has its own gradient
        loss = tf.reduce_sum(out * tf.sin(out)) + tf.reduce_sum(h * 0.3) + tf.reduce_sum(c * c)
    return [out, h, c, *tape.gradient(loss, [x, *state, *layer.trainable_weights])]


@pytest.mark.parametrize("batch,steps,width,units", [(3, 5, 4, 6), (2, 1, 3, 5), (4, 9, 8, 8), (1, 2, 7, 3)])
def test_fused_equals_keras_outputs_states_and_every_gradient(batch, steps, width, units):
    keras_lstm, fused = _pair(units, width)
    rng = np.random.default_rng(batch)
    x = tf.constant(rng.normal(size=(batch, steps, width)), tf.float32)
    state = [tf.constant(rng.normal(size=(batch, units)), tf.float32) for _ in range(2)]
    names = ["outputs", "h", "c", "d_x", "d_h0", "d_c0", "d_kernel", "d_recurrent_kernel", "d_bias"]
    for name, got, want in zip(names, _run(fused, x, state), _run(keras_lstm, x, state)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_fused_in_bfloat16_products_keeps_the_cell_in_float32():
    """Under mixed_bfloat16 the fused layer runs its products in bfloat16 and its cell in float32:
    its outputs and gradients stay within bfloat16's rounding of the float32 layer's, much closer
    than Keras' own mixed-precision loop (every op in bfloat16), and its outputs are bfloat16."""
    reference, _ = _pair(16, 8)
    mixed = {impl: LSTM(16, return_sequences=True, return_state=True, impl=impl, dtype="mixed_bfloat16")
             for impl in ("fused", "keras")}
    for layer in mixed.values():
        layer.build((None, None, 8))
        for w, value in zip(layer.weights, reference.weights):
            w.assign(value)
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(4, 12, 8)), tf.float32)
    state = [tf.zeros([4, 16]), tf.zeros([4, 16])]
    want = _run(reference, x, state)
    got = {impl: [tf.cast(t, tf.float32) for t in _run(layer, x, state)] for impl, layer in mixed.items()}
    assert mixed["fused"](x)[0].dtype == tf.bfloat16
    names = ["outputs", "h", "c", "d_x", "d_h0", "d_c0", "d_kernel", "d_recurrent_kernel", "d_bias"]
    for i, name in enumerate(names):
        err = {impl: float(tf.reduce_max(tf.abs(g[i] - want[i])) / tf.reduce_max(tf.abs(want[i])))
               for impl, g in got.items()}
        assert err["fused"] < 0.03, (name, err)
        assert err["fused"] <= err["keras"] * 1.5 + 1e-3, (name, err)


def test_fused_without_initial_state_and_in_a_compiled_step():
    keras_lstm, fused = _pair(6, 4)
    x = tf.random.normal([2, 7, 4], seed=1)

    @tf.function
    def grads(layer):
        with tf.GradientTape() as tape:
            out, _, _ = layer(x)
            loss = tf.reduce_sum(out ** 2)
        return tape.gradient(loss, layer.trainable_weights)

    for got, want in zip(grads(fused), grads(keras_lstm)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_same_weights_same_names_and_config_round_trip():
    keras_lstm, fused = _pair(5, 3)
    assert [w.path.split("/", 1)[1] for w in fused.weights] == [w.path.split("/", 1)[1] for w in keras_lstm.weights]
    assert [w.shape for w in fused.weights] == [(3, 20), (5, 20), (20,)]
    config = fused.get_config()
    assert config["impl"] == "fused"
    again = LSTM.from_config(config)
    assert again.impl == "fused" and again.units == 5
    # everything else is Keras' own configuration
    ours = {"impl", "weight_drop", "output_dropout", "ar", "tar"}
    assert set(keras.layers.LSTM(5).get_config()) == set(config) - ours


def test_fused_model_saves_and_loads_as_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((None, 3)), LSTM(4, return_sequences=True, impl="fused")])
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[0].impl == "fused"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_dropout_on_inputs_and_the_fallbacks():
    layer = LSTM(4, dropout=0.5, return_sequences=True, impl="fused", seed=1)
    x = tf.ones([2, 3, 5])
    assert not np.allclose(layer(x, training=True).numpy(), layer(x, training=False).numpy())
    # a masked call runs Keras' loop under auto, and is refused by an explicit fused
    masked = keras.Sequential([keras.Input((None,)), keras.layers.Embedding(10, 3, mask_zero=True),
                               LSTM(4, impl="auto")])
    assert masked(tf.constant([[1, 2, 0]])).shape == (1, 4)
    strict = LSTM(4, impl="fused")
    with pytest.raises(ValueError, match="does not take a mask"):
        strict(tf.ones([1, 3, 2]), mask=tf.constant([[True, True, False]]))


@pytest.mark.parametrize("kwargs,fragment", [
    ({"activation": "relu"}, "activation='relu'"),
    ({"recurrent_dropout": 0.1}, "recurrent_dropout=0.1"),
    ({"go_backwards": True}, "go_backwards=True"),
    ({"use_bias": False}, "use_bias=False"),
])
def test_fused_refuses_what_it_cannot_run(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        LSTM(4, impl="fused", **kwargs)
    assert LSTM(4, impl="auto", **kwargs).impl == "auto"  # auto runs Keras' loop for these


def test_impl_choice():
    with pytest.raises(ValueError, match="impl must be one of auto, keras, fused; got 'cudnn'"):
        LSTM(4, impl="cudnn")
    assert choose_impl("keras") == "keras"
    assert choose_impl("auto") == ("keras" if tf.config.get_visible_devices("GPU") else "fused")


def test_cli_model_switches_implementation_with_the_same_weights():
    vocab = 50
    models = {}
    for impl in ("keras", "fused"):
        config = config_from_dict({"tokenizer": {"vocab_size": vocab}, "model": {
            "embedding_dim": 8, "hidden_dim": 12, "num_layers": 2, "num_sampled": 10, "lstm_impl": impl}})
        models[impl] = create_model(resolve(config, 1000), vocab, [1] * vocab)
    keras_model, fused_model = models["keras"], models["fused"]
    assert [v.path for v in fused_model.weights] == [v.path for v in keras_model.weights]
    for a, b in zip(keras_model.weights, fused_model.weights):
        b.assign(a)
    tokens = tf.constant(np.random.default_rng(0).integers(0, vocab, (3, 6)), tf.int32)
    targets = tf.roll(tokens, -1, axis=1)
    mask = tf.ones([3, 6])
    for a, b in zip(keras_model.nll_sum(tokens, targets, mask), fused_model.nll_sum(tokens, targets, mask)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
    with pytest.raises(Exception, match="lstm_impl"):
        config_from_dict({"model": {"lstm_impl": "cudnn"}})


REGULARISED = {"weight_drop": 0.5, "output_dropout": 0.3, "dropout": 0.2, "ar": 2.0, "tar": 1.0}


def _regularised_run(layer, x, state):
    layer.cell.seed_generator.state.assign([7, 0])  # the same masks for both implementations
    with tf.GradientTape() as tape:
        out, h, c = layer(x, initial_state=state, training=True)
        penalty = tf.add_n(layer.losses) if layer.losses else tf.constant(0.0)
        loss = tf.reduce_sum(out * tf.sin(out)) + tf.reduce_sum(c * c) + penalty
    return [out, h, c, penalty, *tape.gradient(loss, layer.trainable_weights)]


def test_weight_drop_locked_dropout_and_penalties_are_the_same_in_both_implementations():
    keras_lstm, fused = _pair(6, 4, **REGULARISED)
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(3, 7, 4)), tf.float32)
    state = [tf.constant(rng.normal(size=(3, 6)), tf.float32) for _ in range(2)]
    got, want = _regularised_run(fused, x, state), _regularised_run(keras_lstm, x, state)
    names = ["outputs", "h", "c", "penalty", "d_kernel", "d_recurrent_kernel", "d_bias"]
    for name, a, b in zip(names, got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
    out = got[0].numpy()
    # Locked output dropout: a unit dropped for a sequence is dropped at every step of it.
    dropped = out == 0
    assert dropped.any() and (dropped == dropped[:, :1, :]).all()
    # The weight-drop mask is really applied: without it (same input mask) the outputs differ.
    plain = LSTM(6, return_sequences=True, return_state=True, impl="fused", dropout=0.2, output_dropout=0.3)
    plain.build((None, None, 4))
    for w, v in zip(plain.weights, fused.weights):
        w.assign(v)
    assert not np.allclose(_regularised_run(plain, x, state)[1].numpy(), got[1].numpy())
    # In inference nothing is dropped and nothing is added.
    inference = fused(x, initial_state=state)
    np.testing.assert_allclose(inference[0].numpy(), keras_lstm(x, initial_state=state)[0].numpy(), atol=1e-5)
    assert not (inference[0].numpy() == 0).any()


def test_activation_penalties_are_awd_lstms():
    from lmtrain.keras.regularize import activation_penalty

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(2, 5, 3)).astype(np.float32)
    dropped = raw * (rng.random((2, 1, 3)) > 0.5) * 2
    want = 2.0 * np.mean(dropped ** 2) + 1.0 * np.mean((raw[:, 1:] - raw[:, :-1]) ** 2) * 4 / 5
    # TAR's 2 x 4 differences are averaged over the batch's 10 tokens, as AR's squares are
    got = activation_penalty(tf.constant(dropped), tf.constant(raw), 2.0, 1.0)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # Spread over replicas: each replica's rows over the global count add up to the whole.
    halves = [activation_penalty(tf.constant(dropped[i:i + 1]), tf.constant(raw[i:i + 1]), 2.0, 1.0, count=10.0)
              for i in range(2)]
    np.testing.assert_allclose(float(halves[0] + halves[1]), want, rtol=1e-5)


@pytest.mark.slow
def test_regularised_layers_save_and_load_as_a_keras_file(tmp_path):
    from lmtrain.keras import Embedding

    model = keras.Sequential([keras.Input((None,), dtype="int32"), Embedding(20, 4, word_dropout=0.1),
                              LSTM(5, return_sequences=True, weight_drop=0.4, output_dropout=0.25, ar=2.0, tar=1.0)])
    ids = np.random.default_rng(1).integers(0, 20, size=(2, 6))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    emb, lstm = loaded.layers
    assert emb.word_dropout == 0.1
    assert (lstm.weight_drop, lstm.output_dropout, lstm.ar, lstm.tar) == (0.4, 0.25, 2.0, 1.0)
    np.testing.assert_allclose(loaded.predict(ids, verbose=0), model.predict(ids, verbose=0), atol=1e-6)
    # fit minimises the penalties too: Keras collects the layer's add_loss
    loaded.compile(optimizer="sgd", loss="mse")
    assert np.isfinite(loaded.fit(ids, np.zeros((2, 6, 5)), verbose=0).history["loss"][0])


def test_word_dropout_drops_whole_word_types():
    from lmtrain.keras import Embedding

    emb = Embedding(50, 3, word_dropout=0.5)
    emb.build((None, None))
    ids = tf.constant([list(range(50)) * 4])  # every id four times
    rows = emb(ids, training=True).numpy()[0].reshape(4, 50, 3)
    zero = (rows == 0).all(-1)  # (4, 50)
    assert (zero == zero[:1]).all()  # each type dropped at all of its occurrences or none
    assert 10 < zero[0].sum() < 40
    kept = emb.embeddings.numpy()[~zero[0]] * 2  # kept rows scaled by 1 / (1 - rate)
    np.testing.assert_allclose(rows[0][~zero[0]], kept, rtol=1e-6)
    np.testing.assert_array_equal(emb(ids).numpy()[0, :50], emb.embeddings.numpy())  # inference


@pytest.mark.parametrize("kwargs,fragment", [
    ({"weight_drop": 1.0}, "weight_drop must be a rate in [0, 1)"),
    ({"output_dropout": -0.1}, "output_dropout must be a rate"),
    ({"ar": -1}, "ar must be a number >= 0"),
    ({"tar": 1.0, "return_sequences": False}, "need return_sequences=True"),
])
def test_regularisation_arguments_are_checked(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        LSTM(4, **kwargs)


def test_weight_drop_masks_keep_the_rate_with_independent_elements_and_calls():
    """The byte masks of weight drop and word dropout (one random byte per element) are dropout
    masks: the kept share is 1 - rate, neighbours (four bytes of one 32-bit draw) and successive
    calls are independent, and compiled the same as eager."""
    import keras

    from lmtrain.keras.regularize import keep_mask

    generator = keras.random.SeedGenerator(3)
    shape = (650, 2600)  # PTB medium's recurrent kernel
    masks = [keep_mask(shape, 0.3, generator).numpy() for _ in range(2)]
    compiled = tf.function(lambda: keep_mask(shape, 0.3, generator))().numpy()
    for mask in (*masks, compiled):
        kept = mask > 0
        assert set(np.unique(mask)) == {0.0, np.float32(256 / (256 - 77))}  # 77 of 256 byte values dropped
        assert abs(kept.mean() - (1 - 77 / 256)) < 0.002
        pairs = kept.reshape(-1, 2)  # neighbours from one 32-bit draw
        assert abs((pairs[:, 0] & pairs[:, 1]).mean() - kept.mean() ** 2) < 0.002
    both = (masks[0] > 0) & (masks[1] > 0)
    assert abs(both.mean() - (masks[0] > 0).mean() * (masks[1] > 0).mean()) < 0.002
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], compiled)


@pytest.mark.parametrize("batch,steps,width,units,proj", [(3, 5, 4, 6, 3), (2, 1, 3, 5, 2), (4, 9, 8, 8, 7)])
def test_projected_fused_equals_keras_outputs_states_and_every_gradient(batch, steps, width, units, proj):
    """LSTMP: h = (o * tanh c) W_p of width P, fed back; the state is (h [P], c [units])."""
    keras_lstm, fused = _pair(units, width, proj_size=proj)
    assert [w.shape for w in fused.weights] == [(width, 4 * units), (proj, 4 * units), (4 * units,), (units, proj)]
    rng = np.random.default_rng(batch)
    x = tf.constant(rng.normal(size=(batch, steps, width)), tf.float32)
    state = [tf.constant(rng.normal(size=(batch, size)), tf.float32) for size in (proj, units)]
    names = ["outputs", "h", "c", "d_x", "d_h0", "d_c0", "d_kernel", "d_recurrent_kernel", "d_bias", "d_projection"]
    got, want = _run(fused, x, state), _run(keras_lstm, x, state)
    assert got[0].shape == (batch, steps, proj) and got[2].shape == (batch, units)
    for name, a, b in zip(names, got, want, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_projected_layers_regularise_alike_and_save_and_load(tmp_path):
    keras_lstm, fused = _pair(6, 4, proj_size=3, **REGULARISED)
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(3, 7, 4)), tf.float32)
    state = [tf.constant(rng.normal(size=(3, size)), tf.float32) for size in (3, 6)]
    names = ["outputs", "h", "c", "penalty", "d_kernel", "d_recurrent_kernel", "d_bias", "d_projection"]
    for name, a, b in zip(names, _regularised_run(fused, x, state), _regularised_run(keras_lstm, x, state),
                          strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
    assert LSTM.from_config(fused.get_config()).proj_size == 3
    model = keras.Sequential([keras.Input((None, 4)), LSTM(6, proj_size=3, return_sequences=True, impl="fused")])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.layers[0].proj_size == 3 and type(loaded.layers[0].cell).__name__ == "LSTMPCell"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("proj_size", [6, 9, 0, -1, 2.5, True])
def test_a_projection_must_narrow_the_cell(proj_size):
    with pytest.raises(ValueError, match=re.escape(f"LSTM proj_size must be an integer from 1 to units - 1 (5): the "
                                                   f"projection narrows the cell's output; got {proj_size!r}")):
        LSTM(6, proj_size=proj_size)
