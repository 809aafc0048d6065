"""Candidate sampler for the sampled softmax: negatives drawn with stateless random ops.

TensorFlow's own candidate samplers are stateful CPU-only kernels with no XLA kernel, and the
default log-uniform one assumes ids sorted by frequency, which BPE ids are not (measured by
benchmarks/library_bench.py). This sampler draws from a fixed proposal Q with stateless uniforms
keyed by (seed, step): it compiles under XLA, and a resumed run draws exactly the negatives an
uninterrupted one would. `tf.nn.sampled_softmax_loss` subtracts the log of each class's
expected count from its logit; the sampler returns those counts. Two ways to draw:

- unique (the default, as TensorFlow's samplers with unique=True): `num_sampled` distinct ids,
  sampled without replacement in proportion to Q. That is the same set as drawing with
  replacement until that many distinct ids have come up, and it is drawn in one shot as the
  top `num_sampled` of log Q + Gumbel noise (one uniform per id, then a top-k). The expected
  count of id k is its inclusion probability 1 - (1 - Q(k))^T, with T the number of draws with
  replacement that yields `num_sampled` distinct ids on average (TensorFlow's approximation,
  with T fixed here, found once by bisection). Under a Zipfian Q, 1024 draws with replacement
  repeat the most frequent ids dozens of times and hold only a few hundred distinct ids; the
  unique set spends every column of the [N, S] logits on a different class.
- with replacement (`unique=False`): `num_sampled` draws, by inverting Q's CDF with
  `searchsorted`; the expected count of id k is num_sampled * Q(k), exactly.

`RunningUnigramSampler` draws the same two ways from a proposal that changes as training goes:
the unigram of the targets counted so far (a [V] counts variable its owner adds each batch's
targets to), so a model needs no counts up front and no assumption about the id order. Its
expected counts are those of the Q it drew from at that step (T is solved in the graph), which
is what the log-Q correction must subtract to stay consistent.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from lmtrain.keras.negatives import negatives_problem

SAMPLER_SCOPE = "negatives"  # name scope of the sampler's [V]-sized ops (one number per id, no weights)
# Newton steps at most when solving for T in the graph (`RunningUnigramSampler`): from T = S they
# rise monotonically to the root, within 1e-9 in under 10 steps for the proposals tested.
NEWTON_STEPS = 40


def unigram_proposal(counts: Sequence[int], distortion: float = 1.0) -> np.ndarray:
    """Q(k) proportional to (count_k + 1) ** distortion; +1 so no id has zero probability."""
    c = np.asarray(counts, dtype=np.float64) + 1.0
    q = c**distortion
    return q / q.sum()


def unigram_log_prior(counts: Sequence[int]) -> np.ndarray:
    """log Q of the add-one training unigram, (count + 1) / (tokens + V), as float32: the output
    bias that makes an untrained softmax layer the unigram model.

    Why a sampled softmax wants it: a row's bias moves only in the steps that draw it, and a
    rare id is drawn a few times an epoch. From zero, the many rare ids keep logits near those
    of common ones for most of a run, and the full softmax's normaliser, which sums all of
    them, pays for it (-10% to -19% validation perplexity on lmtrain's grid).
    """
    return np.log(unigram_proposal(counts)).astype(np.float32)


# The running prior's pseudo-count per id, as a share of the targets counted per id (see
# `running_log_prior`): 0.1 gave a library head with no setup the perplexity `adapt` gives on the
# library benchmark (0.03: +0.6%, 0.3: +2.5%, add-one: +5.3% at 300 steps; results/library-2026-12-07.md).
PRIOR_SMOOTHING = 0.1


def running_log_prior(counts: tf.Tensor, seen: tf.Tensor, ids: tf.Tensor | None = None) -> tf.Tensor:
    """log of the smoothed unigram of `counts` [V] (their sum `seen`, kept apart by the caller so
    no [V]-wide read is needed a step), for every id or at `ids`: what a `SampledSoftmax` with no
    counts adds to its logits.

    Why: `adapt` starts the bias at the log unigram, so the untrained head is the unigram model
    and rare ids start low; with no counts known before training, the targets counted as it
    trains give the same start once they fill in. The pseudo-count per id grows with them
    (PRIOR_SMOOTHING x seen / V) instead of add-one's fixed 1: an id not seen yet then keeps the
    same prior as the counts grow (a tenth of the uniform's share), where under add-one it would
    fall with log(seen), and what the trained bias had learned against the early prior would
    have to be unlearned.
    """
    vocab = float(counts.shape[0])
    pseudo = tf.maximum(PRIOR_SMOOTHING * seen / vocab, 1e-6)
    rows = counts if ids is None else tf.gather(counts, ids)
    return tf.math.log(rows + pseudo) - tf.math.log(seen + pseudo * vocab)


def uniform_proposal(vocab_size: int) -> np.ndarray:
    """Every id equally likely: the plain baseline (rare ids get as many negatives as common ones)."""
    return np.full(vocab_size, 1.0 / vocab_size)


# Below this rank correlation of id and frequency, ids are "plainly not sorted by frequency" and a
# log-uniform proposal is warned about (by `lmtrain fit` and by `SampledSoftmax`).
LOG_UNIFORM_MIN_CORRELATION = 0.9


def frequency_order_correlation(counts: Sequence[int], skip: int = 3) -> float:
    """Spearman correlation between id and frequency rank, special ids (the first `skip`) left out.

    1.0 means ids are sorted by decreasing frequency, which is what the log-uniform (Zipf)
    proposal assumes; SentencePiece BPE ids, for instance, follow merge order instead.
    """
    c = np.asarray(counts, dtype=np.float64)[skip:]
    if c.size < 3 or np.all(c == c[0]):
        return 1.0
    freq_rank = np.argsort(np.argsort(-c, kind="stable"), kind="stable").astype(np.float64)
    ids = np.arange(c.size, dtype=np.float64)
    return float(np.corrcoef(ids, freq_rank)[0, 1])


def log_uniform_proposal(vocab_size: int) -> np.ndarray:
    """Zipf proposal Q(k) = log((k+2)/(k+1)) / log(V+1), as TensorFlow's log-uniform sampler."""
    k = np.arange(vocab_size, dtype=np.float64)
    return (np.log(k + 2) - np.log(k + 1)) / np.log(vocab_size + 1)


SAMPLERS = ("unigram", "log_uniform", "uniform")


def proposal(kind: str, vocab_size: int, counts: Sequence[int] | None = None, distortion: float = 1.0) -> np.ndarray:
    """The proposal Q a sampler draws from, by name (`model.sampler`, `SampledSoftmax(sampler=)`)."""
    if kind == "unigram":
        if counts is None:
            raise ValueError("the unigram sampler needs the training targets' counts")
        if len(counts) != vocab_size:
            raise ValueError(f"unigram counts must have one entry per id: {vocab_size} expected, got {len(counts)}")
        return unigram_proposal(counts, distortion)
    if kind == "uniform":
        return uniform_proposal(vocab_size)
    if kind == "log_uniform":
        return log_uniform_proposal(vocab_size)
    raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {kind!r}")


def inclusion_probabilities(proposal: np.ndarray, num_sampled: int) -> np.ndarray:
    """P(id k is among `num_sampled` distinct ids drawn in proportion to `proposal`), taken as
    1 - (1 - Q(k))^T with T the number of draws with replacement whose expected number of
    distinct ids is `num_sampled` (the approximation TensorFlow's unique samplers use, with
    their per-step count of draws replaced by its expectation). The result sums to num_sampled.
    """
    q = np.asarray(proposal, dtype=np.float64)
    problem = negatives_problem(num_sampled, q.size)
    if problem:
        raise ValueError(f"num_sampled {problem}")
    log1m_q = np.log1p(-np.minimum(q, 1.0 - 1e-16))

    def distinct(t: float) -> float:
        return float(-np.expm1(t * log1m_q).sum())

    lo, hi = float(num_sampled), 2.0 * num_sampled  # distinct(t) <= t: T is at least num_sampled
    while distinct(hi) < num_sampled:
        lo, hi = hi, 2.0 * hi
    for _ in range(100):  # bisection to float precision: distinct() is increasing in t
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if distinct(mid) < num_sampled else (lo, mid)
        if hi - lo <= 1e-9 * hi:
            break
    return -np.expm1(hi * log1m_q)


class CandidateSampler:
    """Draw negatives from a fixed proposal; returns what `sampled_values` expects."""

    def __init__(self, proposal: np.ndarray, num_sampled: int, seed: int, unique: bool = True) -> None:
        proposal = np.asarray(proposal, dtype=np.float64)
        if proposal.ndim != 1 or not np.all(proposal > 0):
            raise ValueError("proposal must be a 1-D array of positive probabilities")
        proposal = proposal / proposal.sum()
        self.vocab_size = int(proposal.shape[0])
        self.num_sampled = int(num_sampled)
        self.seed = int(seed)
        self.unique = unique
        if unique:
            self._log_q = tf.constant(np.log(proposal), dtype=tf.float64)
            expected = inclusion_probabilities(proposal, self.num_sampled)
        else:
            cdf = np.cumsum(proposal)
            cdf[-1] = 1.0  # guard against rounding: every uniform in [0, 1) lands on an id
            self._cdf = tf.constant(cdf, dtype=tf.float64)
            expected = self.num_sampled * proposal
        self._log_expected = tf.constant(np.log(expected), dtype=tf.float32)

    def sample(self, step: tf.Tensor) -> tf.Tensor:
        """`num_sampled` ids (int64), a pure function of (seed, step), the same under XLA."""
        with tf.name_scope(SAMPLER_SCOPE):
            if self.unique:
                return _draw_unique(self._log_q, self.num_sampled, self.seed, step)
            return _draw_with_replacement(self._cdf, self.num_sampled, self.seed, step)

    def __call__(self, labels: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(sampled [S], true_expected_count [N, 1], sampled_expected_count [S]) for labels [N, 1]."""
        return _with_expected(self.sample(step), self._log_expected, labels)


class RunningUnigramSampler:
    """Draw negatives from the unigram of the targets seen so far: Q(k) proportional to
    (count_k + 1) ** distortion, with `counts` a [V] variable its owner adds each batch's targets
    to (after the draw: a step's Q never depends on its own targets). At the first step every
    count is 0 and Q is uniform; within a few hundred steps it is the training unigram, on any
    id order. A pure function of (seed, step, counts), so a model restored with its counts draws
    what an uninterrupted one would have drawn. Same interface as `CandidateSampler`.
    """

    def __init__(self, counts: tf.Variable, num_sampled: int, seed: int, distortion: float = 1.0,
                 unique: bool = True) -> None:
        self.counts = counts
        self.vocab_size = int(counts.shape[0])
        problem = negatives_problem(num_sampled, self.vocab_size)
        if problem:
            raise ValueError(f"num_sampled {problem}")
        self.num_sampled, self.seed = int(num_sampled), int(seed)
        self.distortion, self.unique = float(distortion), unique

    def log_proposal(self) -> tf.Tensor:
        """log Q [V] (float64) from the counts as they are now."""
        weights = self.distortion * tf.math.log(tf.cast(tf.convert_to_tensor(self.counts), tf.float64) + 1.0)
        return weights - tf.reduce_logsumexp(weights)

    def __call__(self, labels: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        with tf.name_scope(SAMPLER_SCOPE):
            log_q = self.log_proposal()
            if self.unique:
                sampled = _draw_unique(log_q, self.num_sampled, self.seed, step)
                log_expected = log_inclusion(log_q, self.num_sampled)
            else:
                cdf = tf.tensor_scatter_nd_update(tf.cumsum(tf.exp(log_q)), [[self.vocab_size - 1]], [1.0])
                sampled = _draw_with_replacement(cdf, self.num_sampled, self.seed, step)
                log_expected = log_q + math.log(self.num_sampled)
            return _with_expected(sampled, tf.cast(log_expected, tf.float32), labels)


def log_inclusion(log_q: tf.Tensor, num_sampled: int) -> tf.Tensor:
    """In the graph, log of `inclusion_probabilities(exp(log_q), num_sampled)` [V] (float64).

    T solves sum_k 1 - (1 - Q(k))^T = S; the left side is increasing and concave in T and is at
    most S at T = S, so Newton's steps from there rise to the root without overshooting.
    """
    log1m_q = tf.math.log1p(-tf.minimum(tf.exp(log_q), 1.0 - 1e-16))  # (V,) log(1 - Q)
    target = tf.constant(float(num_sampled), tf.float64)

    def step(i, t, change):  # type: ignore[no-untyped-def]
        kept = tf.exp(t * log1m_q)  # (1 - Q)^t
        gap = tf.reduce_sum(1.0 - kept) - target  # <= 0
        slope = -tf.reduce_sum(kept * log1m_q)  # > 0
        new_t = t - gap / slope
        return i + 1, new_t, new_t - t

    _, t, _ = tf.while_loop(lambda i, t, change: (i < NEWTON_STEPS) & (change > 1e-9 * t), step,
                            (tf.constant(0), target, tf.constant(np.inf, tf.float64)))
    return tf.math.log(-tf.math.expm1(t * log1m_q))


def _draw_unique(log_q: tf.Tensor, num_sampled: int, seed: int, step: tf.Tensor) -> tf.Tensor:
    """Gumbel top-k: log Q(k) - log(-log u_k) ranks ids as successive draws without replacement
    would pick them (u = 0 gives -inf: never picked). One uniform per id, no weights read."""
    u = _uniform(seed, step, int(log_q.shape[0]))
    keys = log_q - tf.math.log(-tf.math.log(u))
    return tf.cast(tf.math.top_k(keys, num_sampled).indices, tf.int64)


def _draw_with_replacement(cdf: tf.Tensor, num_sampled: int, seed: int, step: tf.Tensor) -> tf.Tensor:
    """`num_sampled` ids by inverting the CDF [V] (its last entry exactly 1) at uniforms."""
    u = _uniform(seed, step, num_sampled)
    ids = tf.searchsorted(cdf, u, side="right")
    return tf.minimum(tf.cast(ids, tf.int64), int(cdf.shape[0]) - 1)


def _with_expected(sampled: tf.Tensor, log_expected: tf.Tensor, labels: tf.Tensor
                   ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """What `output_rows` takes: the draw and the expected counts of the labels and the draw."""
    true_expected = tf.exp(tf.gather(log_expected, tf.cast(labels, tf.int32)))
    sampled_expected = tf.exp(tf.gather(log_expected, tf.cast(sampled, tf.int32)))
    return tf.stop_gradient(sampled), tf.stop_gradient(true_expected), tf.stop_gradient(sampled_expected)


def _uniform(seed: int, step: tf.Tensor, n: int) -> tf.Tensor:
    """n float64 uniforms in [0, 1) from Philox keyed by `seed`, with `step` in the counter.

    The float conversion is done here from raw 64-bit draws: TensorFlow's own float kernels
    convert differently under XLA than on CPU, while the raw Philox bits agree on both, and a
    sampler that changed its draws when compiled would break exact resume.
    """
    key = tf.constant([seed], dtype=tf.uint64)
    # The step goes in the high word: Philox advances the low word once per 128-bit block, so a
    # step in the low word would make step k+1 replay most of step k's stream shifted by one.
    counter = tf.stack([tf.constant(0, tf.uint64), tf.cast(step, tf.uint64)])
    bits = tf.raw_ops.StatelessRandomUniformFullIntV2(shape=[n], key=key, counter=counter, alg=1, dtype=tf.uint64)
    top53 = tf.bitwise.right_shift(bits, tf.constant(11, tf.uint64))  # a double holds 53 bits exactly
    return tf.cast(top53, tf.float64) * (2.0**-53)


def sampler_warning(kind: str | None, counts: Sequence[int] | None, skip: int = 3) -> str | None:
    """Why the `kind` proposal does not fit ids with these counts, or None where it does: the
    log-uniform (Zipf) proposal assumes ids sorted by decreasing frequency, which SentencePiece
    BPE ids and alphabetical word lists are not. `SampledSoftmax` warns with it and `lmtrain fit`
    prints it; `skip` special ids at the start are left out."""
    if kind != "log_uniform" or counts is None:
        return None
    rho = frequency_order_correlation(counts, skip=skip)
    if rho >= LOG_UNIFORM_MIN_CORRELATION:
        return None
    return (f"assumes ids sorted by decreasing frequency, but the rank correlation of id and frequency is only "
            f"{rho:.2f}")


def make_sampler(kind: str | None, vocab_size: int, num_sampled: int, seed: int, counts: Sequence[int] | None = None,
                 distortion: float = 1.0, unique: bool = True, running_counts: Any = None,
                 ) -> CandidateSampler | RunningUnigramSampler:
    """The negatives' sampler, for `SampledSoftmax` and `lmtrain fit` alike: `kind`'s proposal
    ("unigram", the default, "log_uniform" or "uniform") over `vocab_size` ids from known
    `counts`; or, for the unigram with no counts known, the running unigram of
    `running_counts` (a [V] float variable the caller adds each step's targets to)."""
    kind = kind or "unigram"
    if kind == "unigram" and counts is None:
        if running_counts is None:
            raise ValueError("make_sampler: the unigram proposal needs counts, or running_counts to count them in")
        return RunningUnigramSampler(running_counts, num_sampled, seed, distortion, unique=unique)
    with tf.init_scope():  # its tables are constants of no one graph: built eagerly
        q = proposal(kind, vocab_size, counts, distortion)
        return CandidateSampler(q, num_sampled, seed, unique=unique)


def count_ids(data: Any, vocab_size: int, who: str = "adapt") -> np.ndarray:
    """How often each id in [0, vocab_size) occurs in `data`: an array or tensor of ids, or a
    `tf.data.Dataset` of them (a dataset of tuples, such as (x, y) pairs, is read for its last
    element, the targets). Non-integer values and ids out of range are errors naming `who`."""
    counts = np.zeros(vocab_size, np.int64)
    batches = data.as_numpy_iterator() if isinstance(data, tf.data.Dataset) else [data]
    for batch in batches:
        if isinstance(batch, (tuple, list)) and isinstance(data, tf.data.Dataset):
            batch = batch[-1]
        ids = np.asarray(batch)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            if not np.all(np.equal(np.mod(ids, 1), 0)):
                raise ValueError(f"{who}: expected integer class ids; got non-integer values")
        ids = ids.astype(np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"{who}: ids must be in [0, {vocab_size}); got values from {ids.min()} to {ids.max()}")
        counts += np.bincount(ids, minlength=vocab_size)
    return counts
