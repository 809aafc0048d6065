"""A benchmark-only reference: the adaptive softmax (Grave et al. 2017) in Keras, on lmtrain's prepared ids.

The strongest thing a user would pick instead of a sampled softmax at a large vocabulary is not the
full softmax but the adaptive one (PyTorch's `nn.AdaptiveLogSoftmaxWithLoss`, fairseq's default).
This is that model written for Keras, to be trained side by side with `lmtrain fit` on the very
same windows of the very same prepared ids:

    Embedding(V, E) -> dropout -> lmtrain.keras.LSTM(H) -> dropout -> AdaptiveSoftmax(H, V, cutoffs, div 4)

- The head is a [H, c1 + clusters] softmax over the c1 most frequent ids and one entry per tail
  cluster; tail cluster i (ids [c_i, c_i+1)) projects H to H / 4^(i+1) and scores its ids there, as
  PyTorch's layer does (no biases in the tails, none in the head: PyTorch's default). Its
  log-probabilities are exact, so the perplexity is comparable with `lmtrain eval`'s.
- Ids must go from frequent to rare for the clusters to mean anything: they are ranked by the
  training counts `prepare` measured (word-level ids already are; SentencePiece's nearly).
- The LSTM is lmtrain's fused one, so the comparison is about the output layer alone.
- Keras' Adam (dense, as PyTorch's Adam is for a dense embedding) at 0.002 with the global norm
  clipped to 0.25: PyTorch's word_language_model's clip, with the peer's Adam.

Not part of the package: `benchmarks/compare.py --adaptive` runs it; alone:
    python benchmarks/adaptive.py configs/demo.yaml --set tokenizer.model_type=word ... [--cutoffs 2000 10000]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lmtrain.build import step_counts  # noqa: E402
from lmtrain.config.files import load_config  # noqa: E402
from lmtrain.config.resolve import resolve  # noqa: E402
from lmtrain.config.schema import Config  # noqa: E402
from lmtrain.data.meta import load_prepared  # noqa: E402
from lmtrain.data.records import eval_dataset, split_files, train_dataset  # noqa: E402
from lmtrain.keras import LSTM  # noqa: E402
from lmtrain.paths import DataPaths  # noqa: E402
from lmtrain.scoring import perplexity as perplexity_of  # noqa: E402

RATE, CLIP, DIV_VALUE = 0.002, 0.25, 4.0


def default_cutoffs(vocab_size: int) -> list[int]:
    """PyTorch users' usual cutoffs: 2,000 and 10,000 ids (fewer where the vocabulary is smaller)."""
    return [c for c in (2000, 10000) if c < vocab_size] or [vocab_size // 2]


class AdaptiveSoftmax(keras.layers.Layer):
    """Exact log-probabilities of targets under an adaptive softmax over ids sorted by frequency."""

    def __init__(self, vocab_size: int, cutoffs: list[int], div_value: float = DIV_VALUE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if list(cutoffs) != sorted(set(cutoffs)) or not 0 < cutoffs[0] or cutoffs[-1] >= vocab_size:
            raise ValueError(f"cutoffs must increase strictly within (0, {vocab_size}), got {cutoffs}")
        self.vocab_size, self.cutoffs, self.div_value = vocab_size, list(cutoffs), div_value
        self.bounds = list(zip(self.cutoffs, self.cutoffs[1:] + [vocab_size]))  # tail clusters [lo, hi)
        self.shortlist = self.cutoffs[0]

    def build(self, input_shape: Any) -> None:
        width = int(input_shape[-1])
        self.head = self.add_weight(shape=(width, self.shortlist + len(self.bounds)), name="head",
                                    initializer="glorot_uniform")
        self.tails = []
        for i, (lo, hi) in enumerate(self.bounds):
            inner = max(1, int(width // self.div_value ** (i + 1)))
            projection = self.add_weight(shape=(width, inner), name=f"tail_{i}_proj", initializer="glorot_uniform")
            self.tails.append((projection, self.add_weight(shape=(inner, hi - lo), name=f"tail_{i}_out",
                                                           initializer="glorot_uniform")))

    def log_prob(self, hidden: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """log p(target) [N] for hidden [N, H] and targets [N]: the head's log-softmax for a
        shortlist id, else its cluster's entry plus the id's log-softmax within the cluster (only
        the rows whose target is in a cluster are scored against it)."""
        head = tf.nn.log_softmax(tf.matmul(hidden, self.head))  # (N, shortlist + clusters)
        out = tf.gather(head, tf.minimum(targets, self.shortlist - 1), batch_dims=1)
        for i, ((lo, hi), (proj, scores)) in enumerate(zip(self.bounds, self.tails)):
            rows = tf.where((targets >= lo) & (targets < hi))[:, 0]  # (n_i,)
            tail = tf.nn.log_softmax(tf.matmul(tf.matmul(tf.gather(hidden, rows), proj), scores))  # (n_i, hi - lo)
            within = tf.gather(tail, tf.gather(targets, rows) - lo, batch_dims=1)
            cluster = tf.gather(head[:, self.shortlist + i], rows)
            out = tf.tensor_scatter_nd_update(out, rows[:, None], cluster + within)
        return out


class AdaptiveLM(keras.Model):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, dropout: float, cutoffs: list[int]
                 ) -> None:
        super().__init__()
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim)
        self.lstm = LSTM(hidden_dim, return_sequences=True)
        self.drop_in, self.drop_out = keras.layers.Dropout(dropout), keras.layers.Dropout(dropout)
        self.softmax = AdaptiveSoftmax(vocab_size, cutoffs)
        self.hidden_dim = hidden_dim

    def build(self, input_shape: Any) -> None:
        self.embedding.build(input_shape)
        self.lstm.build((None, None, self.embedding.output_dim))
        self.softmax.build((None, self.hidden_dim))

    def call(self, tokens: tf.Tensor, training: bool = False) -> tf.Tensor:
        z = self.drop_out(self.lstm(self.drop_in(self.embedding(tokens), training=training)), training=training)
        return tf.reshape(z, [-1, self.hidden_dim])  # (B*T, H)

    def nll_sum(self, tokens: tf.Tensor, targets: tf.Tensor, mask: tf.Tensor, training: bool = False
                ) -> tuple[tf.Tensor, tf.Tensor]:
        logp = self.softmax.log_prob(self(tokens, training=training), tf.reshape(targets, [-1]))
        flat_m = tf.reshape(mask, [-1])
        return -tf.reduce_sum(logp * flat_m), tf.reduce_sum(flat_m)


def frequency_ranks(counts: list[int]) -> np.ndarray:
    """rank[id]: 0 for the most frequent training id (ties keep id order)."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return ranks.astype(np.int32)


def train_adaptive(config: Config, eval_every: int, cutoffs: list[int] | None = None,
                   echo: Any = print) -> dict[str, Any]:
    """Train the adaptive-softmax model on `config`'s prepared data for the run `lmtrain fit`
    would make of it (its steps, batch, windows and shuffle seed), validating every `eval_every`
    steps; return steps, wall_seconds (training only), tokens_per_sec, valid, test and the
    curve of (training seconds, step, validation perplexity)."""
    t, m = config.train, config.model
    data = DataPaths(Path(config.data.dir))
    meta = load_prepared(data)
    vocab = meta.vocab_size
    cutoffs = cutoffs or default_cutoffs(vocab)
    ranks = tf.constant(frequency_ranks(meta.unigram_counts))
    files = {s: split_files(data, s, meta.splits[s].shard_bytes) for s in ("train", "valid", "test")}
    _, total_steps = step_counts(config, meta)
    # The dropout lmtrain's run of this config trains with (model.dropout null: set from the data).
    m = resolve(config, total_steps, train_tokens=meta.splits["train"].tokens, vocab_size=vocab).model
    keras.utils.set_random_seed(t.seed)
    model = AdaptiveLM(vocab, m.embedding_dim, m.hidden_dim, m.dropout, cutoffs)
    model.build((None, None))
    optimizer = keras.optimizers.Adam(RATE)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(tokens: tf.Tensor, targets: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            total, count = model.nll_sum(tf.gather(ranks, tokens), tf.gather(ranks, targets), mask, training=True)
            loss = total / count
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), CLIP)
        optimizer.apply(grads, variables)
        return loss

    @tf.function
    def scored(tokens: tf.Tensor, targets: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return model.nll_sum(tf.gather(ranks, tokens), tf.gather(ranks, targets), mask)

    def perplexity(split: str) -> float:
        total = count = 0.0
        for batch in eval_dataset(files[split], t.seq_len, t.batch_size):
            s, c = scored(*batch)
            total, count = total + float(s), count + float(c)
        return perplexity_of(total / count)

    batches = iter(train_dataset(files["train"], t.seq_len, t.batch_size, t.epochs, t.shuffle_buffer, t.seed))
    seconds, curve = 0.0, []
    for i in range(1, total_steps + 1):
        batch = next(batches)
        t0 = time.perf_counter()
        loss = float(step(*batch))
        seconds += time.perf_counter() - t0
        if i % eval_every == 0 or i == total_steps:
            curve.append((seconds, i, perplexity("valid")))
            echo(f"adaptive step {i}/{total_steps}: loss {loss:.3f}, valid {curve[-1][2]:.2f}, "
                 f"{i * t.batch_size * t.seq_len / seconds:,.0f} tokens/s")
    return {"steps": total_steps, "wall_seconds": seconds,
            "tokens_per_sec": total_steps * t.batch_size * t.seq_len / seconds, "valid": curve[-1][2],
            "test": perplexity("test"), "curve": curve, "cutoffs": cutoffs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, nargs="?")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--cutoffs", type=int, nargs="+")
    p.add_argument("--eval-every", type=int, default=100)
    args = p.parse_args()
    result = train_adaptive(load_config(args.config, args.overrides), args.eval_every, args.cutoffs)
    print({k: v for k, v in result.items() if k != "curve"})


if __name__ == "__main__":
    main()
