"""Utilisation: the share of this machine's matmul rate that `lmtrain fit`'s training step reaches.

For a config's step (default: the demo's, B 64 x T 35, E 256, H 512 projected to 256, 1,024
sampled negatives at 8k ids), in one process:
  1. every matmul the step runs (`lmtrain.fit.flops.step_matmuls`: the LSTM's input, recurrent and
     gradient products, the projection, the sampled logits) is timed alone with `tf.matmul` at its
     own shape, in float32 and in bfloat16: the machine's rate at that shape;
  2. the step's shape-aware ceiling is the rate it would reach doing nothing but those matmuls,
     each at that rate: sum of FLOPs / sum of (FLOPs / rate);
  3. the step itself, as `fit` builds it (`build_trainer`), is timed with `train.precision`
     float32 and mixed_bfloat16 (the LSTM's products in bfloat16; the projection and the output
     layer, which make the softmax, in float32, as `lmtrain.model` runs them), and so is the LSTM
     alone (`lmtrain.keras.LSTM`, forward + backward, at the step's shapes).
Prints, per precision, GFLOP/s reached against the ceiling and the share, and the bfloat16 speed-up.
The matmul timings and the steps alternate round by round, so machine noise hits them alike.

Usage: python benchmarks/utilisation_bench.py [--config configs/demo.yaml] [--set KEY=VALUE ...] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import round_robin, synthetic_batch, zipf_counts  # noqa: E402

from lmtrain.config.files import load_config  # noqa: E402
from lmtrain.config.resolve import resolve  # noqa: E402
from lmtrain.config.schema import Config  # noqa: E402
from lmtrain.fit.flops import Matmul, step_matmuls  # noqa: E402
from lmtrain.fit.trainer import build_trainer  # noqa: E402
from lmtrain.keras import LSTM  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
PRECISIONS = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=DEMO)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--vocab", type=int, default=8000, help="Vocabulary of the step (ids drawn from a Zipf law).")
    p.add_argument("--rounds", type=int, default=5, help="Timing rounds (medians are reported).")
    p.add_argument("--steps", type=int, default=5, help="Training steps per round.")
    args = p.parse_args()
    config = load_config(args.config, args.overrides)
    results = run(config, args.vocab, args.rounds, args.steps)
    print_table(results)
    print(json.dumps(results))


def run(config: Config, vocab: int, rounds: int, steps: int) -> dict[str, Any]:
    t = config.train
    counts = zipf_counts(vocab)
    batch = synthetic_batch(counts, t.batch_size, t.seq_len)
    timers: dict[str, Callable[[], None]] = {}
    models = {}
    for precision in PRECISIONS:
        cfg = _with_precision(config, precision)
        trainer = build_trainer(resolve(cfg, 1000), vocab, counts.tolist())
        models[precision], step = trainer.step, trainer.train_fn
        float(step(batch)["loss"])  # trace
        timers[f"step {precision}"] = _repeat(lambda step=step: step(batch)["loss"], steps)
        timers[f"lstm {precision}"] = _lstm_timer(cfg, steps)
    matmuls = step_matmuls(models["float32"], t.batch_size, t.seq_len)
    shapes = sorted({(mm.m, mm.k, mm.n) for mm in matmuls})
    for dtype_name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
        for shape in shapes:
            timers[f"matmul {dtype_name} {shape}"] = _matmul_timer(shape, dtype)
    times = round_robin(timers, warmup=1, reps=rounds)
    med = {name: statistics.median(v) for name, v in times.items()}
    rate = {(dt, shape): 2.0 * shape[0] * shape[1] * shape[2] * MATMUL_REPS / med[f"matmul {dt} {shape}"]
            for dt in ("float32", "bfloat16") for shape in shapes}

    def ceiling(parts: list[Matmul], bf16_parts: set[str]) -> float:
        seconds = sum(mm.flops / rate[("bfloat16" if mm.part in bf16_parts else "float32", (mm.m, mm.k, mm.n))]
                      for mm in parts)
        return sum(mm.flops for mm in parts) / seconds

    lstm = [mm for mm in matmuls if mm.part == "lstm"]
    out: dict[str, Any] = {"shapes": {f"{dt} {m}x{k}x{n}": round(rate[(dt, (m, k, n))] / 1e9, 1)
                                      for dt in ("float32", "bfloat16") for (m, k, n) in shapes}, "rows": []}
    for precision in PRECISIONS:
        bf16 = {"lstm"} if precision == "mixed_bfloat16" else set()  # the projection feeds the softmax: float32
        for what, parts, key in (("LSTM alone", lstm, "lstm"), ("whole step", matmuls, "step")):
            seconds = med[f"{key} {precision}"] / steps
            flops = sum(mm.flops for mm in parts)
            out["rows"].append({"what": what, "precision": precision, "gflop": round(flops / 1e9, 2),
                                "ms": round(1000 * seconds, 1), "gflops_per_sec": round(flops / seconds / 1e9, 1),
                                "ceiling_gflops_per_sec": round(ceiling(parts, bf16) / 1e9, 1),
                                "share": round(flops / seconds / ceiling(parts, bf16), 3)})
    by = {(r["what"], r["precision"]): r for r in out["rows"]}
    out["bf16_speedup"] = {what: round(by[(what, "float32")]["ms"] / by[(what, "mixed_bfloat16")]["ms"], 2)
                           for what in ("LSTM alone", "whole step")}
    return out


MATMUL_REPS = 20  # products per timed call of a shape


def _matmul_timer(shape: tuple[int, int, int], dtype: tf.DType) -> Callable[[], None]:
    """MATMUL_REPS products [m, k] x [k, n] in a graph loop (each iteration's product is kept, so
    none is skipped; the loop's own cost per iteration is part of what a recurrent step pays too)."""
    m, k, n = shape
    a = tf.cast(tf.random.normal([m, k]), dtype)
    b = tf.cast(tf.random.normal([k, n]), dtype)

    @tf.function
    def loop() -> tf.Tensor:
        _, last = tf.while_loop(lambda i, _: i < MATMUL_REPS, lambda i, _: (i + 1, tf.matmul(a, b)),
                                (tf.constant(0), tf.zeros([m, n], dtype)))
        return last

    return lambda: loop().numpy()


def _lstm_timer(config: Config, steps: int) -> Callable[[], None]:
    """The LSTM layer alone, forward and backward, at the step's shapes and precision."""
    t, m = config.train, config.model
    layer = LSTM(m.hidden_dim, return_sequences=True, dtype=config.train.precision)
    x = tf.random.normal([t.batch_size, t.seq_len, m.embedding_dim])
    layer.build(x.shape)

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x, training=True), tf.float32))
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in grads])

    step()
    return _repeat(step, steps)


def _repeat(fn: Callable[[], Any], n: int) -> Callable[[], None]:
    def timed() -> None:
        for _ in range(n):
            value = fn()
        float(value)  # waits for the last one

    return timed


def _with_precision(config: Config, precision: str) -> Config:
    import dataclasses

    return dataclasses.replace(config, train=dataclasses.replace(config.train, precision=precision))


def print_table(results: dict[str, Any]) -> None:
    print("\nmatmul rate at each of the step's shapes (GFLOP/s, M x K x N):")
    for name, value in results["shapes"].items():
        print(f"  {name}: {value}")
    print("\n| what | precision | GFLOP | ms | GFLOP/s | shape-aware ceiling GFLOP/s | share of ceiling |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results["rows"]:
        print(f"| {r['what']} | {r['precision']} | {r['gflop']} | {r['ms']} | {r['gflops_per_sec']} "
              f"| {r['ceiling_gflops_per_sec']} | {100 * r['share']:.0f}% |")
    print(f"\nmixed_bfloat16 speed-up over float32: LSTM alone {results['bf16_speedup']['LSTM alone']}x, "
          f"whole step {results['bf16_speedup']['whole step']}x")


if __name__ == "__main__":
    keras.config.disable_interactive_logging()
    tf.get_logger().setLevel("ERROR")  # one traced loop per shape: no retracing warnings
    main()
