"""What the regularisers cost a training step: lmtrain's step with and without them.

Times, in one process and round-robin, `lmtrain fit`'s own training step (built by
`lmtrain.build.build_trainer`, fused LSTM, sampled softmax, LazyAdam) at the demo's shapes:
  plain      dropout 0.1 per token (today's default)
  locked     locked dropout 0.1 (one mask per sequence)
  wd+locked  locked dropout 0.4 and weight drop 0.5 on each layer's recurrent kernel
  awd        wd+locked with word dropout 0.1 and AR 2 / TAR 1 (AWD-LSTM's set)
Prints a table (median ms/step and the ratio to plain) and a last line of JSON.

Usage: python benchmarks/regularise_bench.py [--vocab 8000] [--num-layers 1] [--reps 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import (  # noqa: E402
    add_shape_arguments,
    round_robin,
    shape_sections,
    synthetic_batch,
    zipf_counts,
)

from lmtrain.config.files import config_from_dict  # noqa: E402
from lmtrain.config.resolve import resolve  # noqa: E402
from lmtrain.fit.trainer import build_trainer  # noqa: E402

VARIANTS = {
    "plain": {"dropout": 0.1},
    "locked": {"dropout": 0.1, "locked_dropout": True},
    "wd+locked": {"dropout": 0.4, "locked_dropout": True, "weight_drop": 0.5},
    "awd": {"dropout": 0.4, "locked_dropout": True, "weight_drop": 0.5, "word_dropout": 0.1, "ar": 2.0, "tar": 1.0},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--num-layers", type=int, default=1)
    add_shape_arguments(p)
    p.set_defaults(batch_size=64, reps=15)
    args = p.parse_args()
    counts = zipf_counts(args.vocab)
    batch = synthetic_batch(counts, args.batch_size, args.seq_len)
    steps = {}
    for name, model in VARIANTS.items():
        sections = shape_sections(args.vocab, args)
        sections["model"] = {**sections["model"], "num_layers": args.num_layers, **model}
        config = config_from_dict(sections)
        step_fn = build_trainer(resolve(config, 10_000), args.vocab, counts.tolist(), total_steps=10_000).train_fn
        steps[name] = (lambda f: lambda: f(batch)["loss"].numpy())(step_fn)
    times = round_robin(steps, args.warmup, args.reps)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    shape = (f"V {args.vocab:,}, B {args.batch_size} x T {args.seq_len}, E {args.embedding_dim}, "
             f"{args.num_layers} x H {args.hidden_dim}, {args.num_sampled} negatives")
    print(f"training step, {shape}, median of {args.reps}")
    print("| variant | model keys | ms/step | vs plain |")
    print("|---|---|---:|---:|")
    for name, ms in medians.items():
        keys = ", ".join(f"{k} {v}" for k, v in VARIANTS[name].items())
        print(f"| {name} | {keys} | {ms:.1f} | {ms / medians['plain']:.3f} |")
    print(json.dumps({"shape": shape, "ms": medians}))


if __name__ == "__main__":
    main()
