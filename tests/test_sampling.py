"""lmtrain.keras.sampling: the stateless negative samplers (unique and with replacement), their expected counts, XLA."""

import numpy as np
import pytest
import tensorflow as tf

from lmtrain.keras.sampling import (
    CandidateSampler,
    RunningUnigramSampler,
    _uniform,
    inclusion_probabilities,
    log_inclusion,
    log_uniform_proposal,
    unigram_proposal,
)


@pytest.mark.parametrize("unique", [True, False])
def test_same_seed_and_step_draw_the_same_negatives(unique):
    counts = [5, 1, 0, 9, 3] * 20
    s = CandidateSampler(unigram_proposal(counts), num_sampled=50, seed=7, unique=unique)
    a, b, c = s.sample(tf.constant(3)), s.sample(tf.constant(3)), s.sample(tf.constant(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # consecutive steps draw unrelated streams, not a shifted copy of one another
    u0, u1 = _uniform(7, tf.constant(0), 64).numpy(), _uniform(7, tf.constant(1), 64).numpy()
    assert not set(u0.tolist()) & set(u1.tolist())
    other = CandidateSampler(unigram_proposal(counts), num_sampled=50, seed=8, unique=unique)
    assert not np.array_equal(a, other.sample(tf.constant(3)))


def test_unique_negatives_are_distinct_and_expected_counts_are_inclusion_probabilities():
    counts = 10_000 / np.arange(1, 201) ** 1.1  # Zipfian, 200 ids
    q = unigram_proposal(counts)
    s = CandidateSampler(q, num_sampled=40, seed=0)  # unique is the default
    draws = [s.sample(tf.constant(i)).numpy() for i in range(600)]
    assert all(len(set(d)) == 40 for d in draws)
    # With replacement, 40 draws from this Zipf hold far fewer distinct ids.
    again = CandidateSampler(q, num_sampled=40, seed=0, unique=False)
    assert np.mean([len(set(again.sample(tf.constant(i)).numpy())) for i in range(50)]) < 30
    pi = inclusion_probabilities(q, 40)
    assert pi.sum() == pytest.approx(40) and np.all(np.diff(pi) <= 0) and pi[0] > 0.99
    empirical = np.bincount(np.concatenate(draws), minlength=len(q)) / 600
    np.testing.assert_allclose(empirical, pi, atol=0.06)
    np.testing.assert_allclose(empirical[:20].mean(), pi[:20].mean(), rtol=0.02)
    _, true_expected, sampled_expected = s(tf.constant([[0], [199]], tf.int64), tf.constant(0))
    np.testing.assert_allclose(true_expected.numpy().ravel(), pi[[0, 199]], rtol=1e-5)
    np.testing.assert_allclose(sampled_expected.numpy(), pi[draws[0]], rtol=1e-5)
    with pytest.raises(ValueError, match="num_sampled"):
        inclusion_probabilities(q, 200)


def test_expected_counts_match_empirical_frequencies():
    counts = np.array([100, 50, 25, 12, 6, 3, 1, 0])
    q = unigram_proposal(counts, distortion=0.75)
    s = CandidateSampler(q, num_sampled=64, seed=0, unique=False)
    draws = np.concatenate([s.sample(tf.constant(i)).numpy() for i in range(400)])
    empirical = np.bincount(draws, minlength=len(q)) / 400  # mean count per step
    _, true_expected, sampled_expected = s(tf.constant([[0], [7]], tf.int64), tf.constant(0))
    np.testing.assert_allclose(true_expected.numpy().ravel(), 64 * q[[0, 7]], rtol=1e-5)
    np.testing.assert_allclose(empirical, 64 * q, rtol=0.1, atol=0.15)
    assert sampled_expected.shape == (64,)


@pytest.mark.parametrize("unique", [True, False])
def test_runs_under_xla(unique):
    s = CandidateSampler(log_uniform_proposal(1000), num_sampled=32, seed=1, unique=unique)
    fn = tf.function(lambda labels, step: s(labels, step), jit_compile=True)
    sampled, _, _ = fn(tf.constant([[1]], tf.int64), tf.constant(5, tf.int64))
    assert np.array_equal(sampled, s.sample(tf.constant(5, tf.int64)))
    assert sampled.numpy().max() < 1000


def test_frequency_order_correlation_and_uniform_proposal():
    from lmtrain.keras.sampling import frequency_order_correlation, uniform_proposal

    special = [0, 50, 50]  # <unk>, </s>, <nl>: left out
    assert frequency_order_correlation(special + [90, 40, 30, 20, 10, 5]) == pytest.approx(1.0)
    assert frequency_order_correlation(special + [5, 10, 20, 30, 40, 90]) == pytest.approx(-1.0)
    q = uniform_proposal(8)
    assert q.shape == (8,) and np.allclose(q, 1 / 8)


@pytest.mark.parametrize("q, k", [(log_uniform_proposal(5000), 1024), (np.full(300, 1 / 300), 299),
                                  (unigram_proposal(np.random.default_rng(0).integers(0, 1000, 2000) ** 2), 1500),
                                  (unigram_proposal([1, 0, 0, 0]), 1)])
def test_inclusion_solved_in_the_graph_matches_the_bisection(q, k):
    graph = np.exp(log_inclusion(tf.constant(np.log(q)), k).numpy())
    np.testing.assert_allclose(graph, inclusion_probabilities(q, k), rtol=1e-7, atol=1e-12)
    assert graph.sum() == pytest.approx(k, rel=1e-9)


@pytest.mark.parametrize("unique", [True, False])
def test_running_unigram_draws_from_the_counts_it_is_given(unique):
    counts = tf.Variable(np.zeros(50, np.float32))
    s = RunningUnigramSampler(counts, num_sampled=10, seed=3, unique=unique)
    labels = tf.constant([[0], [49]], tf.int64)
    first = s(labels, tf.constant(0))
    # No counts yet: the uniform proposal, with its own expected counts
    uniform = CandidateSampler(np.full(50, 0.02), 10, seed=3, unique=unique)
    for a, b in zip(first, uniform(labels, tf.constant(0))):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
    seen = np.random.default_rng(1).integers(0, 7, 400)  # only ids 0..6 have been targets
    counts.assign(np.bincount(seen, minlength=50).astype(np.float32))
    fixed = CandidateSampler(unigram_proposal(counts.numpy()), 10, seed=3, unique=unique)
    for step in (0, 5):  # the same draws and log-Q terms as a fixed sampler of those counts
        for a, b in zip(s(labels, tf.constant(step)), fixed(labels, tf.constant(step))):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
    compiled = tf.function(lambda lab, step: s(lab, step), jit_compile=True)
    np.testing.assert_array_equal(compiled(labels, tf.constant(5, tf.int64))[0], fixed.sample(tf.constant(5)))
