"""LSTM and scoring benchmark: the fused CPU LSTM against Keras' loop, and full-softmax scoring
against the GEMM it is made of. Side by side in one process, round-robin (machine noise hits
every variant alike), medians:
  lstm        forward + backward of one LSTM layer alone (B, T, E, H as given), impl=keras and
              impl=fused, same weights and inputs
  floor       lmtrain's Embedding + LSTM and optimizer with no output layer (step_bench's (a)),
              with each implementation
  sampled     lmtrain fit's whole training step (`build_trainer`, sampled softmax, LazyAdam,
              clipping) at --vocab, with each implementation
  scoring     the exact NLL of B*T positions at --score-vocab: `softmax.full_nll` as `eval` and
              fit's validation run it (column chunks, running log-sum-exp) and as it was before
              2026-12-02 (row blocks of `block_nll`, sparse_softmax_cross_entropy_with_logits),
              and the [N, H] x [H, V] product alone: the ceiling, and the share of it reached
and with --fit CONFIG, `lmtrain fit CONFIG` itself for --fit-steps steps with
`model.lstm_impl=keras` and `=fused`, alternately, twice each (subprocesses; tokens/s as fit
logs it, start-up and validation excluded). The config's data must be prepared.
Prints a table and a last line of JSON: {"results": {...}}.

Usage: python benchmarks/lstm_bench.py [--reps 7] [--fit configs/demo.yaml --fit-steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import (  # noqa: E402
    add_shape_arguments,
    floor_step,
    round_robin,
    shape_sections,
    synthetic_batch,
    zipf_counts,
)

from lmtrain.config.files import config_from_dict  # noqa: E402
from lmtrain.config.resolve import resolve  # noqa: E402
from lmtrain.fit.trainer import build_trainer  # noqa: E402
from lmtrain.keras import softmax  # noqa: E402
from lmtrain.keras.lstm import LSTM  # noqa: E402
from lmtrain.rundir import logged_scalars  # noqa: E402

IMPLS = ("keras", "fused")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=8_000, help="Vocabulary of the sampled step (the demo's).")
    p.add_argument("--score-vocab", type=int, default=60_000, help="Vocabulary of the scoring benchmark.")
    add_shape_arguments(p)
    p.add_argument("--fit", type=Path, default=None, help="Also time `lmtrain fit` on this (prepared) config.")
    p.add_argument("--fit-steps", type=int, default=60)
    args = p.parse_args()

    variants = {**lstm_variants(args), **step_variants(args), **scoring_variants(args)}
    times = round_robin(variants, args.warmup, args.reps)
    results: dict[str, Any] = {f"{name}_ms": round(1000 * statistics.median(t), 1) for name, t in times.items()}
    results["score_tokens"] = args.batch_size * args.seq_len
    if args.fit is not None:
        results["fit_tok_s"] = fit_throughput(args.fit, args.fit_steps)
    print_table(results, args)
    print(json.dumps({"results": results}))


def lstm_variants(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    """Forward + backward of one layer: outputs, both final states and all gradients."""
    b, t, e, h = args.batch_size, args.seq_len, args.embedding_dim, args.hidden_dim
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(b, t, e)), tf.float32)
    out_weights = tf.constant(rng.normal(size=(b, t, h)), tf.float32)
    layers = {impl: LSTM(h, return_sequences=True, return_state=True, impl=impl) for impl in IMPLS}
    for layer in layers.values():
        layer.build((None, None, e))
    for a, c in zip(layers["keras"].weights, layers["fused"].weights):
        c.assign(a)

    def make(layer: LSTM) -> Callable[[], Any]:
        @tf.function
        def step() -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                out, hT, cT = layer(x)
                loss = tf.reduce_sum(out * out_weights) + tf.reduce_sum(hT) + tf.reduce_sum(cT)
            return tape.gradient(loss, [x, *layer.trainable_weights])

        return lambda: [g.numpy() for g in step()]

    return {f"lstm_{impl}": make(layer) for impl, layer in layers.items()}


def step_variants(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    counts = zipf_counts(args.vocab)
    batch = synthetic_batch(counts, args.batch_size, args.seq_len)
    out: dict[str, Callable[[], Any]] = {}
    for impl in IMPLS:
        sections = shape_sections(args.vocab, args)  # step_bench's (b), with this LSTM
        config = config_from_dict({**sections, "model": {**sections["model"], "lstm_impl": impl}})
        trainer = build_trainer(resolve(config, 1000), args.vocab, counts.tolist())
        model, optimizer, step = trainer.model, trainer.optimizer, trainer.train_fn
        out[f"sampled_{impl}"] = (lambda s: lambda: float(s(batch)["loss"]))(step)
        floor = floor_step(model, optimizer, batch[0])
        out[f"floor_{impl}"] = (lambda f: lambda: float(f()))(floor)
    return out


def scoring_variants(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    vocab, n, d = args.score_vocab, args.batch_size * args.seq_len, args.hidden_dim
    rng = np.random.default_rng(2)
    weights = tf.Variable(rng.normal(0, 0.05, (vocab, d)).astype(np.float32))
    biases = tf.Variable(rng.normal(0, 1, vocab).astype(np.float32))
    hidden = tf.constant(rng.normal(size=(n, d)), tf.float32)
    targets = tf.constant(rng.integers(0, vocab, n), tf.int32)
    new = tf.function(lambda: tf.reduce_sum(softmax.full_nll(hidden, targets, weights, biases, vocab)))
    old = tf.function(lambda: tf.reduce_sum(softmax.full_nll(hidden, targets, weights, biases, vocab,
                                                             block=softmax.block_nll)))
    gemm = tf.function(lambda: tf.reduce_sum(tf.matmul(hidden, weights, transpose_b=True)))
    a, b = float(new()), float(old())
    if abs(a - b) > 1e-4 * abs(b):
        raise SystemExit(f"scoring disagrees: {a} vs {b}")
    return {"score_chunked": lambda: float(new()), "score_row_blocks": lambda: float(old()),
            "score_gemm": lambda: float(gemm())}


def fit_throughput(config: Path, steps: int) -> dict[str, list[float]]:
    """tokens/s of `lmtrain fit` with each implementation, alternately, twice each."""
    out: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(2):
            for impl in IMPLS:
                run_dir = Path(tmp) / f"{impl}-{round_}"
                cmd = [sys.executable, "-m", "lmtrain", "fit", str(config), "-q", "--set", f"model.lstm_impl={impl}",
                       "--set", f"train.run_dir={run_dir}", "--set", f"train.max_steps={steps}",
                       "--set", "train.log_every=10", "--set", f"train.checkpoint_every={steps}",
                       "--set", "train.eval_tokens=1"]
                subprocess.run(cmd, check=True, capture_output=True)
                # the first interval holds the trace: tokens/s of the others, as fit logs them
                rates = [v for _, step, v in logged_scalars(run_dir / "logs", "train/tokens_per_sec") if step > 10]
                out[impl].append(round(statistics.median(rates)))
    return out


def print_table(r: dict[str, Any], args: argparse.Namespace) -> None:
    shape = f"B {args.batch_size}, T {args.seq_len}, E {args.embedding_dim}, H {args.hidden_dim}"
    print(f"\n{shape}; median of {args.reps}, round-robin in one process")
    print("| what | keras | fused | keras / fused |")
    print("|---|---:|---:|---:|")
    for name, label in (("lstm", "LSTM forward + backward"), ("floor", "floor: Embedding + LSTM step"),
                        ("sampled", f"lmtrain fit's step, V = {args.vocab:,}, {args.num_sampled} negatives")):
        k, f = r[f"{name}_keras_ms"], r[f"{name}_fused_ms"]
        print(f"| {label} | {k:.1f} ms | {f:.1f} ms | {k / f:.2f} |")
    if "fit_tok_s" in r:
        k, f = r["fit_tok_s"]["keras"], r["fit_tok_s"]["fused"]
        print(f"| `lmtrain fit {args.fit}` tokens/s (two runs each) | {' / '.join(f'{x:,}' for x in k)} | "
              f"{' / '.join(f'{x:,}' for x in f)} | "
              f"{statistics.median(f) / statistics.median(k):.2f} (fused / keras) |")
    n, v, d = r["score_tokens"], args.score_vocab, args.hidden_dim
    gemm = r["score_gemm_ms"]
    print(f"\nFull-softmax scoring of {n} positions at V = {v:,} (H {d}):")
    print("| scoring | ms | tokens/s | GFLOP/s (2·H·V per token) | share of the GEMM alone |")
    print("|---|---:|---:|---:|---:|")
    for name, label in (("score_row_blocks", "row blocks + sparse softmax cross-entropy (before)"),
                        ("score_chunked", "column chunks + running log-sum-exp (now)"),
                        ("score_gemm", "the [N, H] x [H, V] product alone (ceiling)")):
        ms = r[f"{name}_ms"]
        print(f"| {label} | {ms:.0f} | {n / ms * 1000:,.0f} | {2 * n * v * d / ms / 1e6:.0f} | {gemm / ms:.0%} |")


if __name__ == "__main__":
    main()
