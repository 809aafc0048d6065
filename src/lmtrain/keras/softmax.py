"""The output layer's maths: the sampled-softmax loss from gathered rows, and the exact softmax.

One implementation for both users of it: `lmtrain.keras.layers.SampledSoftmax` (the Keras layer a
user drops into their own model) and `lmtrain.model.LanguageModel` (what `lmtrain fit` trains).
Both own a [V, D] output matrix and a [V] bias; these functions take them as tensors (the
backend variables, so that gathering rows is a ResourceGather of only the rows asked for and
the gradient stays an `IndexedSlices`).

Why rows [V, D] and not a Dense kernel [D, V]: the sampled loss reads rows per class, and the
matrix can then also be the (tied) [V, E] embedding.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import keras
import tensorflow as tf

# Logit given to a sampled class that is the row's true class (exp() of it is exactly 0).
MASKED = -1e30

# Largest logits block (rows x vocabulary, float32 elements) evaluated at once: 64 MiB.
LOGITS_BUDGET = 1 << 24

# Classes per logits chunk when scoring (`score_block`): all the block's rows against this many
# output rows at a time. The [N, D] x [D, V] product is what scoring costs, and it runs faster
# with more rows: at V = 60k and 200k, row blocks of the budget reached 84-109 GFLOP/s here,
# column chunks 152-172, the product alone 185-198.
SCORE_COLUMNS = 8192

# (labels [N, 1]) , step -> (sampled [S], true_expected_count [N, 1], sampled_expected_count [S])
SamplerFn = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]


class OutputRows(NamedTuple):
    """What the sampled loss reads of the output layer, for one batch."""

    labels: tf.Tensor  # (N,) int64 target ids
    sampled: tf.Tensor  # (S,) int64 negative ids
    log_q_true: tf.Tensor  # (N,) log of each target's expected count among the draws
    log_q_sampled: tf.Tensor  # (S,)
    w_true: tf.Tensor  # (N, D) output rows of the targets
    b_true: tf.Tensor  # (N,)
    w_sampled: tf.Tensor  # (S, D) output rows of the negatives
    b_sampled: tf.Tensor  # (S,)

    def trainable(self) -> list[tf.Tensor]:
        return [self.w_true, self.b_true, self.w_sampled, self.b_sampled]


def output_rows(weights: Any, biases: Any, labels: tf.Tensor, sampler: SamplerFn, step: tf.Tensor,
                detached: bool = False) -> OutputRows:
    """The rows the sampled loss reads: the targets' and the negatives' (N + S rows, no more).

    `weights` [V, D] and `biases` [V] should be backend variables (`keras_variable.value`):
    gathering from them reads only the rows asked for. `detached` cuts the rows from the
    variables, for a caller that assembles the variables' gradients itself
    (`lmtrain fit`'s training step does, to sum the negatives' rows over replicas).
    """
    labels = tf.cast(labels, tf.int64)  # (N,)
    sampled, true_expected, sampled_expected = sampler(labels[:, None], step)  # (S,) (N,1) (S,)
    rows = [tf.gather(weights, labels), tf.gather(biases, labels), tf.gather(weights, sampled),
            tf.gather(biases, sampled)]
    if detached:
        rows = [tf.stop_gradient(r) for r in rows]
    return OutputRows(labels, sampled, tf.math.log(true_expected[:, 0]), tf.math.log(sampled_expected), *rows)


def sampled_nll(hidden: tf.Tensor, rows: OutputRows) -> tf.Tensor:
    """Sampled-softmax loss per position [N] for hidden [N, D] and the rows of `output_rows`.

    The maths of `tf.nn.sampled_softmax_loss(..., remove_accidental_hits=True)` (a test checks
    they agree), written with ops XLA can compile: TensorFlow's version calls
    ComputeAccidentalHits, which has no XLA kernel. Logits of the true class and of the sampled
    classes get the log-Q correction (minus the log of their expected count); a sampled class
    equal to a row's true class is masked out of that row.
    """
    true_logits = tf.reduce_sum(hidden * rows.w_true, axis=-1) + rows.b_true - rows.log_q_true  # (N,)
    sampled_logits = (tf.matmul(hidden, rows.w_sampled, transpose_b=True) + rows.b_sampled
                      - rows.log_q_sampled)  # (N, S)
    hits = tf.equal(rows.labels[:, None], rows.sampled[None, :])  # (N, S)
    sampled_logits = tf.where(hits, tf.constant(MASKED, sampled_logits.dtype), sampled_logits)
    logits = tf.concat([true_logits[:, None], sampled_logits], axis=1)  # (N, 1 + S)
    return tf.reduce_logsumexp(logits, axis=1) - true_logits


def add_row_gradients(variables: list[Any], grads: list[Any], output: tuple[Any, Any], row_grads: list[tf.Tensor],
                      ids: tf.Tensor) -> list[Any]:
    """`grads` of `variables` with the gradients of output rows `ids` ([n, D] and [n], from
    detached `output_rows`) added to those of the output layer's `output` = (weights, biases).

    With detached row gathers the tape gives the rows' gradients, and this turns them into
    IndexedSlices of the variables. Built by hand rather than by the tape so that the negatives'
    rows, which every replica gathers, can be summed over replicas as one dense block before
    they become IndexedSlices: LazyAdam squares each occurrence of a row, and a negative's
    occurrence must be its whole-batch gradient, as on one device, not one partial sum per replica.
    """
    # Static shapes: tf.shape() of the variable would read all V rows.
    parts = {id(v): tf.IndexedSlices(g, ids, tf.constant(list(v.shape), tf.int64)) for v, g in zip(output, row_grads)}
    out = []
    for v, g in zip(variables, grads):
        part = parts.get(id(v))
        if part is not None and g is not None:  # tied weights: the input lookup's rows too
            g = _concat_slices(g, part)
        out.append(part if g is None else g)
    return out


def _concat_slices(a: Any, b: tf.IndexedSlices) -> tf.IndexedSlices:
    """Two row gradients of one variable as one IndexedSlices (duplicates are summed later)."""
    if not isinstance(a, tf.IndexedSlices):  # a dense gradient: add the rows densely
        return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)
    return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                            tf.concat([tf.cast(a.indices, tf.int64), b.indices], 0), b.dense_shape)

def logits(hidden: tf.Tensor, weights: Any, biases: Any) -> tf.Tensor:
    """Full-softmax logits [..., V] of hidden states [..., D]."""
    return tf.tensordot(hidden, weights, axes=[[-1], [1]]) + biases


def block_nll(hidden: tf.Tensor, targets: tf.Tensor, weights: Any, biases: Any) -> tf.Tensor:
    """Exact negative log-likelihood per position [N] of hidden [N, D], all V logits at once."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits(hidden, weights, biases))


def score_block(hidden: tf.Tensor, targets: tf.Tensor, weights: Any, biases: Any) -> tf.Tensor:
    """Exact negative log-likelihood per position [N] of hidden [N, D], for scoring (no gradient).

    The logits are computed `SCORE_COLUMNS` classes at a time, for all N rows at once, with a
    running log-sum-exp (max and rescaled sum); the target's logit is its own row's dot product.
    `block_nll`'s `sparse_softmax_cross_entropy_with_logits` also writes the [N, V] softmax its
    gradient needs, and rows x V blocks keep the product's M small at large V: this runs closer
    to the machine's GEMM rate (`benchmarks/lstm_bench.py` compares them). Each chunk is a gather of
    its rows, so a variable is never read whole (see `lmtrain.keras.embedding.Embedding`).
    """
    weights, biases = (x.value if isinstance(x, keras.Variable) else x for x in (weights, biases))
    vocab = int(weights.shape[0])
    chunks = -(-vocab // SCORE_COLUMNS)
    n = tf.shape(hidden)[0]

    def chunk(k, top, total):  # type: ignore[no-untyped-def]
        ids = tf.range(k * SCORE_COLUMNS, tf.minimum((k + 1) * SCORE_COLUMNS, vocab))
        z = tf.matmul(hidden, tf.gather(weights, ids), transpose_b=True) + tf.gather(biases, ids)  # (N, C)
        new_top = tf.maximum(top, tf.reduce_max(z, axis=1))
        total = total * tf.exp(top - new_top) + tf.reduce_sum(tf.exp(z - new_top[:, None]), axis=1)
        return k + 1, new_top, total

    _, top, total = tf.while_loop(lambda k, *_: k < chunks, chunk,
                                  (tf.constant(0), tf.fill([n], float(MASKED)), tf.zeros([n])))
    target = tf.reduce_sum(hidden * tf.gather(weights, targets), axis=1) + tf.gather(biases, targets)
    return top + tf.math.log(total) - target


def full_nll(hidden: tf.Tensor, targets: tf.Tensor, weights: Any, biases: Any, vocab_size: int,
             block: Callable[..., tf.Tensor] = score_block) -> tf.Tensor:
    """Exact negative log-likelihood per position [N], in row blocks of at most `LOGITS_BUDGET`
    floats, so memory never holds N x V logits. `block` scores one block (`score_block`;
    `block_nll` where a gradient is wanted)."""
    rows = max(1, LOGITS_BUDGET // (min(vocab_size, SCORE_COLUMNS) if block is score_block else vocab_size))
    width = hidden.shape[-1]
    n = tf.shape(hidden)[0]
    if isinstance(hidden.shape[0], int) and hidden.shape[0] <= rows:
        return block(hidden, targets, weights, biases)
    # As few blocks as the budget allows, of equal size: the padding is under one row per
    # block (padding to whole budget-sized blocks would multiply the work of small batches).
    blocks = tf.maximum((n + rows - 1) // rows, 1)
    size = (n + blocks - 1) // blocks
    pad = blocks * size - n
    h = tf.reshape(tf.pad(hidden, [[0, pad], [0, 0]]), [blocks, size, width])  # (K, R, D)
    t = tf.reshape(tf.pad(targets, [[0, pad]]), [blocks, size])  # (K, R)
    nll = tf.map_fn(
        lambda ht: block(ht[0], ht[1], weights, biases),
        (h, t),
        fn_output_signature=tf.float32,
        parallel_iterations=1,  # one block alive at a time: that is the memory bound
    )
    return tf.reshape(nll, [-1])[:n]
