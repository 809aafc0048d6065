"""Generation benchmark: tokens/s of `lmtrain generate` and of the exported SavedModel step.

For each vocabulary size, on a model of the demo's shape with random weights and a log-Zipf
output bias (decoding speed depends on the weights only through the shape of the next-token
distribution, which top-p sampling sees), times:
  generate      `lmtrain.use.generate.sample`, the code path of `lmtrain generate` and of
                `lmtrain.load(...).generate(...)`: prompt, top-p sampling and the loop of
                one-token LSTM steps (state carried) in one compiled function; `--ignore-eos`
                so every run makes exactly N tokens
  generate x32  the same with `--num-samples 32`: 32 streams decoded as one batch
  export step   the `step` signature of `lmtrain export`'s SavedModel, loaded with
                `tf.saved_model.load` and driven token by token (greedy) as a serving client would
  export x32    the same step on a batch of 32 streams (tokens/s counts all 32)
and, for `generate`, the time for 2N tokens over the time for N (about 2 when the cost per
token is constant; re-running the prefix each token would make it about 4).
Prints a table and a last line of JSON: {"results": [{"vocab": ..., "generate_tok_s": ...}, ...]}.

Usage: python benchmarks/generate_bench.py [--vocab 8000 100000] [--tokens 200] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lmtrain.build import create_model  # noqa: E402
from lmtrain.config.files import config_from_dict  # noqa: E402
from lmtrain.config.resolve import resolve  # noqa: E402
from lmtrain.use.export import export_model  # noqa: E402
from lmtrain.use.generate import SamplingOptions, sample  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, nargs="+", default=[8_000, 100_000])
    p.add_argument("--embedding-dim", type=int, default=256)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--tokens", type=int, default=200, help="Tokens per generation (N).")
    p.add_argument("--batch", type=int, default=32, help="Streams of the batched runs (generate and export step).")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    results = [bench_vocab(vocab, args) for vocab in args.vocab]
    print_table(results, args)
    print(json.dumps({"results": results}))


def bench_vocab(vocab: int, args: argparse.Namespace) -> dict[str, Any]:
    config = config_from_dict({
        "tokenizer": {"vocab_size": vocab},
        "model": {"embedding_dim": args.embedding_dim, "hidden_dim": args.hidden_dim,
                  "num_layers": args.num_layers, "num_sampled": min(1024, vocab // 2)},
    })
    model = create_model(resolve(config, 1000), vocab, [1] * vocab)  # a long run's model (tied)
    # Random weights give a nearly uniform next-token distribution, unlike a trained model, and
    # top-p's cost depends on that shape: give the output bias log-Zipf frequencies (a unigram
    # model's shape) so the nucleus is as small as it is in real use.
    zipf = 1.0 / np.arange(1, vocab + 1)
    model.softmax_b.assign(np.log(zipf / zipf.sum()).astype(np.float32))
    prompt = list(range(3, 13))
    n = args.tokens
    options = {k: SamplingOptions(max_tokens=k, top_p=0.9, seed=0, ignore_eos=True) for k in (n, 2 * n)}
    sample(model, prompt, options[n])  # trace once

    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, Path(tmp) / "export", None, {})
        served = tf.saved_model.load(str(Path(tmp) / "export"))
        one = _served_loop(served, 1, n)
        many = _served_loop(served, args.batch, n)
        one(), many()  # warm up
        sample(model, prompt, options[n], args.batch)
        generate_n = _median(lambda: sample(model, prompt, options[n]), args.reps)
        generate_many = _median(lambda: sample(model, prompt, options[n], args.batch), args.reps)
        generate_2n = _median(lambda: sample(model, prompt, options[2 * n]), args.reps)
        export_one = _median(one, args.reps)
        export_many = _median(many, args.reps)
    return {
        "vocab": vocab,
        "tokens": n,
        "generate_tok_s": round(n / generate_n, 1),
        "generate_2n_over_n": round(generate_2n / generate_n, 2),
        "generate_batch_tok_s": round(args.batch * n / generate_many, 1),
        "export_step_tok_s": round(n / export_one, 1),
        "export_step_batch": args.batch,
        "export_step_batch_tok_s": round(args.batch * n / export_many, 1),
    }


def _served_loop(served: Any, batch: int, n: int) -> Callable[[], None]:
    """Greedy decoding of n tokens through the SavedModel's step signature."""

    def run() -> None:
        state = served.zero_state(tf.constant(batch))
        h, c = state["h"], state["c"]
        token = tf.fill([batch], 1)  # </s>: start a new document
        for _ in range(n):
            out = served.step(token, h, c)
            h, c = out["h"], out["c"]
            token = tf.argmax(out["log_probs"], axis=-1, output_type=tf.int32)
        token.numpy()

    return run


def _median(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nE={args.embedding_dim} H={args.hidden_dim} layers={args.num_layers}; N={args.tokens} tokens after a "
          f"10-token prompt; median of {args.reps}")
    print(f"| vocab | generate tok/s | generate time 2N / N | generate x{args.batch} tok/s | export step tok/s | "
          f"export step x{args.batch} tok/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['vocab']} | {r['generate_tok_s']:,.0f} | {r['generate_2n_over_n']:.2f} | "
              f"{r['generate_batch_tok_s']:,.0f} | {r['export_step_tok_s']:,.0f} | "
              f"{r['export_step_batch_tok_s']:,.0f} |")


if __name__ == "__main__":
    main()
