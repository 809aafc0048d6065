"""lmtrain.use.generate's token choice: greedy, top-k, top-p (nucleus) sampling, seeds and bad options."""

import numpy as np
import pytest
import tensorflow as tf

from lmtrain.errors import LmtrainError
from lmtrain.use.generate import SamplingOptions, _nucleus_draw, _top_p, pick

LOG_PROBS = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))


def _draws(options, n=400):
    """n draws from LOG_PROBS through the decoder's own `pick`, one row per draw."""
    log_probs = tf.constant(np.repeat(LOG_PROBS, n, axis=0))
    seed = tf.constant([options.seed, 0], tf.int64)
    return pick(log_probs, tf.constant(options.temperature, tf.float32), tf.constant(options.top_k),
                tf.constant(options.top_p, tf.float32), seed).numpy().tolist()


def test_greedy_and_top_k_one_pick_the_likeliest():
    assert set(_draws(SamplingOptions(temperature=0), 5)) == {0}
    assert set(_draws(SamplingOptions(top_k=1), 50)) == {0}


def test_top_k_and_top_p_cut_the_tail():
    assert set(_draws(SamplingOptions(top_k=2))) == {0, 1}
    assert set(_draws(SamplingOptions(top_p=0.75))) == {0, 1}  # 0.5 + 0.3 reaches 0.75
    assert set(_draws(SamplingOptions(top_p=0.5))) == {0}  # 0.5 alone reaches 0.5
    assert set(_draws(SamplingOptions())) == {0, 1, 2, 3}
    counts = np.bincount(_draws(SamplingOptions(), 4000), minlength=4) / 4000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_same_seed_same_choices():
    assert _draws(SamplingOptions(seed=1)) == _draws(SamplingOptions(seed=1))
    assert _draws(SamplingOptions(seed=1)) != _draws(SamplingOptions(seed=2))


@pytest.mark.parametrize("kwargs", [{"max_tokens": 0}, {"temperature": -1}, {"top_k": -2}, {"top_p": 1.5}])
def test_bad_options(kwargs):
    with pytest.raises(LmtrainError):
        SamplingOptions(**kwargs)


def test_nucleus_equals_a_full_sort():
    """The nucleus found from the likeliest 256 (or from all V when those hold too little)."""
    rng = np.random.default_rng(3)
    for size, top_p, alpha in [(5000, 0.9, 0.05), (5000, 0.999, 0.05), (300, 0.5, 0.5), (7, 1.0 - 1e-6, 1.0),
                               (3000, 0.9, 5.0)]:  # the last: flat, 256 ids hold too little mass
        probs = rng.dirichlet(np.full(size, alpha)).astype(np.float32)
        order = np.argsort(-probs, kind="stable")
        expected = order[: int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1]
        logits = tf.math.log(tf.constant(probs[None]))
        kept = np.flatnonzero(np.isfinite(_top_p(logits, tf.constant(top_p, tf.float32)).numpy()[0]))
        assert set(kept.tolist()) == set(expected.tolist()), (size, top_p)


def test_nucleus_draws_by_rejection_come_from_the_nucleus_in_proportion():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.full(40, 0.3)).astype(np.float32)
    logits = tf.math.log(tf.constant(np.repeat(probs[None], 3000, axis=0)))
    for top_p, rounds in [(0.8, 16), (0.05, 1)]:  # the second: most rows fall back to the sorted cut
        nucleus = np.isfinite(_top_p(logits[:1], tf.constant(top_p, tf.float32)).numpy()[0])
        draws = _nucleus_draw(logits, tf.constant(top_p, tf.float32), tf.constant([7, 0], tf.int64), rounds).numpy()
        assert nucleus[draws].all()
        share = np.bincount(draws, minlength=40) / draws.size
        expected = np.where(nucleus, probs, 0) / probs[nucleus].sum()
        np.testing.assert_allclose(share, expected, atol=0.04)
