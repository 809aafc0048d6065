"""Training-step benchmark: what sampled softmax + the row-sparse optimizer buy at large vocabularies.

Times, in one process and round-robin (so machine noise hits every variant alike), one training
step of:
  (a) floor    the same Embedding + LSTM with no output layer (loss = mean of the hidden states),
               same optimizer: the cost sampled softmax should approach;
  (b) sampled  lmtrain's own step, built by `lmtrain.fit.trainer.build_trainer` exactly as `lmtrain fit`
               builds it (sampled softmax, LazyAdam, clipping);
  (c) full     the full-softmax baseline as Keras users write it: Embedding -> LSTM -> Dense(V),
               SparseCategoricalCrossentropy(from_logits=True), Keras Adam, `train_on_batch`;
  (d) stock    lmtrain's sampled step (the same model and train_step) with Keras' dense Adam;
  (e) keras    the library in a user's own model, trained the usual Keras way: Sequential(
               keras.layers.Embedding -> LSTM -> lmtrain.keras.SampledSoftmax), compiled with
               head.loss and lmtrain.keras.LazyAdam, `train_on_batch` (the step `model.fit` runs);
  (f) keras+E  (e) with lmtrain.keras.Embedding in place of Keras' (which reads its whole matrix).
Prints a table (median ms/step, tokens/s, ratios b/a, c/b, d/b, e/b, c/e, peak RSS) and a last
line of JSON: {"results": [{"vocab": ..., "floor_ms": ..., "sampled_ms": ..., "full_ms": ...,
"sampled_stock_adam_ms": ..., "keras_fit_ms": ..., "keras_fit_row_embedding_ms": ...}, ...]}.

Usage: python benchmarks/step_bench.py [--vocab 10000 100000] [--reps 7] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import (  # noqa: E402
    add_shape_arguments,
    floor_step,
    shape_sections,
    synthetic_batch,
    zipf_counts,
)

from lmtrain.config.files import config_from_dict  # noqa: E402
from lmtrain.config.resolve import resolve  # noqa: E402
from lmtrain.fit.step import TrainStep  # noqa: E402
from lmtrain.fit.trainer import build_trainer  # noqa: E402
from lmtrain.keras import Embedding, LazyAdam, SampledSoftmax  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, nargs="+", default=[10_000, 100_000])
    add_shape_arguments(p)
    p.add_argument("--skip-full", action="store_true", help="Leave out (c), the slow full-softmax baseline.")
    p.add_argument("--rss-probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_probe:  # child process: lmtrain's training step alone, then its peak RSS
        print(json.dumps({"rss_gb": sampled_only_rss(args.vocab[0], args)}))
        return

    results = []
    for vocab in args.vocab:
        results.append(bench_vocab(vocab, args))
        tf.keras.backend.clear_session()
    print_table(results, args)
    print(json.dumps({"results": results}))


def bench_vocab(vocab: int, args: argparse.Namespace) -> dict[str, Any]:
    config = config_from_dict(shape_sections(vocab, args))
    counts = zipf_counts(vocab)
    batch = synthetic_batch(counts, args.batch_size, args.seq_len)

    variants: dict[str, Callable[[], Any]] = {}
    trainer = build_trainer(resolve(config, 1000), vocab, counts.tolist())
    model, optimizer, step = trainer.model, trainer.optimizer, trainer.train_fn
    variants["sampled"] = lambda: step(batch)["loss"]
    float(step(batch)["loss"])  # trace now
    # (d) and (a) train the same model objects (sharing them keeps peak memory down): (d) is the
    # very same training step with Keras' dense Adam as its optimizer.
    stock = keras.optimizers.Adam(learning_rate=config.train.rate(config.model.hidden_dim))
    stock.build(model.trainable_variables)
    stock_step = tf.function(TrainStep(model, stock, "sampled", trainer.step.sampler,
                                       config.train.clip_norm).train_step)
    float(stock_step(batch)["loss"])
    variants["sampled_stock_adam"] = lambda: stock_step(batch)["loss"]
    variants["floor"] = floor_step(model, optimizer, batch[0])
    variants["keras_fit"] = keras_sampled_step(vocab, args, counts, batch, keras.layers.Embedding)
    variants["keras_fit_row_embedding"] = keras_sampled_step(vocab, args, counts, batch, Embedding)
    if not args.skip_full:
        variants["full"] = keras_full_softmax_step(vocab, args, batch[0], batch[1])

    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.warmup):
        for fn in variants.values():
            float(fn())
    for _ in range(args.reps):
        for name, fn in variants.items():  # round-robin: drift in machine load hits all alike
            t0 = time.perf_counter()
            float(fn())  # waits for the step to finish
            times[name].append(time.perf_counter() - t0)

    row: dict[str, Any] = {"vocab": vocab}
    for name in ("floor", "sampled", "full", "sampled_stock_adam", "keras_fit", "keras_fit_row_embedding"):
        row[f"{name}_ms"] = round(1000 * statistics.median(times[name]), 1) if name in times else None
    row["tokens_per_step"] = args.batch_size * args.seq_len
    row["peak_rss_gb"] = peak_rss_gb()  # this process: all four variants alive together
    row["sampled_only_rss_gb"] = probe_sampled_rss(vocab, args)
    return row


def peak_rss_gb() -> float:
    """This process's peak resident set size. VmHWM where Linux has it: ru_maxrss carries the
    parent's peak across fork + exec, so a child would report its parent's figure."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024**2, 2)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


def probe_sampled_rss(vocab: int, args: argparse.Namespace) -> float:
    """Peak RSS of lmtrain's training step on its own, measured in a fresh child process."""
    cmd = [sys.executable, __file__, "--rss-probe", "--vocab", str(vocab), "--batch-size", str(args.batch_size),
           "--seq-len", str(args.seq_len), "--embedding-dim", str(args.embedding_dim),
           "--hidden-dim", str(args.hidden_dim), "--num-sampled", str(args.num_sampled)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_gb"]


def sampled_only_rss(vocab: int, args: argparse.Namespace) -> float:
    config = config_from_dict(shape_sections(vocab, args))
    counts = zipf_counts(vocab)
    step = build_trainer(resolve(config, 1000), vocab, counts.tolist()).train_fn
    batch = synthetic_batch(counts, args.batch_size, args.seq_len)
    for _ in range(3):
        float(step(batch)["loss"])
    return peak_rss_gb()


def keras_full_softmax_step(vocab: int, args: argparse.Namespace, x: tf.Tensor, y: tf.Tensor) -> Callable[[], Any]:
    """(c): the usual Keras full-softmax model, trained the usual way."""
    model = keras.Sequential([
        keras.Input((args.seq_len,), dtype="int32"),
        keras.layers.Embedding(vocab, args.embedding_dim),
        keras.layers.LSTM(args.hidden_dim, return_sequences=True),
        keras.layers.Dense(vocab),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return lambda: model.train_on_batch(x, y)


def keras_sampled_step(vocab: int, args: argparse.Namespace, counts: np.ndarray, batch: tuple[tf.Tensor, ...],
                       embedding: type) -> Callable[[], Any]:
    """(e), (f): the README's "sampled softmax in your own Keras model", trained as Keras trains
    it (`train_on_batch` runs the compiled train function `fit` runs), on the same batch and
    with the same unigram proposal as (b)."""
    head = SampledSoftmax(vocab, num_sampled=args.num_sampled, counts=counts, seed=0)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        embedding(vocab, args.embedding_dim),
        keras.layers.LSTM(args.hidden_dim, return_sequences=True),
        head,
    ])
    model.compile(optimizer=LazyAdam(1e-3), loss=head.loss)
    x, y = batch[0], batch[1]
    return lambda: model.train_on_batch(x, y)


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    tokens = args.batch_size * args.seq_len

    def ms(v: float | None) -> str:
        return f"{v:9.1f}" if v is not None else "        -"

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:6.2f}" if a is not None and b is not None else "     -"

    print(f"\nB={args.batch_size} T={args.seq_len} E={args.embedding_dim} H={args.hidden_dim} "
          f"num_sampled={args.num_sampled}; median of {args.reps} steps after {args.warmup} warm-up; ms/step")
    print("| vocab | (a) floor | (b) sampled | (c) full+Adam | (d) sampled+Adam | (e) keras fit | (f) keras fit, "
          "lmtrain Embedding | b tokens/s | b/a | c/b | d/b | e/b | f/b | c/e | peak RSS GB, all "
          "| peak RSS GB, (b) alone |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        b, e, f = r["sampled_ms"], r["keras_fit_ms"], r["keras_fit_row_embedding_ms"]
        print(f"| {r['vocab']} | {ms(r['floor_ms'])} | {ms(b)} | {ms(r['full_ms'])} | {ms(r['sampled_stock_adam_ms'])} "
              f"| {ms(e)} | {ms(f)} | {tokens / (b / 1000):,.0f} | {ratio(b, r['floor_ms'])} | "
              f"{ratio(r['full_ms'], b)} "
              f"| {ratio(r['sampled_stock_adam_ms'], b)} | {ratio(e, b)} | {ratio(f, b)} | {ratio(r['full_ms'], e)} "
              f"| {r['peak_rss_gb']} | {r['sampled_only_rss_gb']} |")


if __name__ == "__main__":
    main()
