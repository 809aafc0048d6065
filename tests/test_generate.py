import numpy as np
import pytest

from lmtrain.errors import LmtrainError
from lmtrain.generate import SamplingOptions, _choose

LOG_PROBS = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


def _draws(options, n=400):
    rng = np.random.default_rng(0)
    return [_choose(LOG_PROBS, options, rng) for _ in range(n)]


def test_greedy_and_top_k_one_pick_the_likeliest():
    assert set(_draws(SamplingOptions(temperature=0), 5)) == {0}
    assert set(_draws(SamplingOptions(top_k=1), 50)) == {0}


def test_top_k_and_top_p_cut_the_tail():
    assert set(_draws(SamplingOptions(top_k=2))) == {0, 1}
    assert set(_draws(SamplingOptions(top_p=0.75))) == {0, 1}  # 0.5 + 0.3 reaches 0.75
    assert set(_draws(SamplingOptions())) == {0, 1, 2, 3}


def test_same_seed_same_choices():
    assert _draws(SamplingOptions(seed=1)) == _draws(SamplingOptions(seed=1))


@pytest.mark.parametrize("kwargs", [{"max_tokens": 0}, {"temperature": -1}, {"top_k": -2}, {"top_p": 1.5}])
def test_bad_options(kwargs):
    with pytest.raises(LmtrainError):
        SamplingOptions(**kwargs)


def test_nucleus_equals_a_full_sort():
    from lmtrain.generate import _nucleus

    rng = np.random.default_rng(3)
    for size, top_p in [(5000, 0.9), (5000, 0.999), (300, 0.5), (7, 1.0 - 1e-9)]:
        probs = rng.dirichlet(np.full(size, 0.05))
        order = np.argsort(-probs, kind="stable")
        expected = order[: int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1]
        assert set(_nucleus(probs, top_p).tolist()) == set(expected.tolist())
