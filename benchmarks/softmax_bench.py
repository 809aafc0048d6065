"""What the full softmax costs at small vocabularies: `lmtrain fit`'s step with the sampled and with
the full softmax, at vocabularies from 1x to 16x num_sampled.

Both steps are `build_trainer`'s (the code `lmtrain fit` runs: LazyAdam, clipping, the defaults'
tied weights and projection), on the same Zipf-distributed batch, timed side by side in one
process, round-robin, medians. Up to about 2x the two cost the same, so there the choice
(model.softmax=auto, `config.resolve.choose_softmax`) rests on the perplexity each trains to, which
`make compare` measures; the table's last column is what auto picks. Prints a table and a last line
of JSON: {"results": [...]}.

Usage: python benchmarks/softmax_bench.py [--ratios 1 2 4 8 16] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import (  # noqa: E402
    add_shape_arguments,
    round_robin,
    shape_sections,
    synthetic_batch,
    zipf_counts,
)

from lmtrain.build import choose_softmax  # noqa: E402
from lmtrain.config.files import config_from_dict  # noqa: E402
from lmtrain.config.resolve import resolve  # noqa: E402
from lmtrain.config.schema import ModelConfig  # noqa: E402
from lmtrain.fit.trainer import build_trainer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0, 16.0],
                   help="Vocabularies as multiples of --num-sampled (a sampled step needs more than 1).")
    add_shape_arguments(p)
    args = p.parse_args()

    vocabs = [int(r * args.num_sampled) + (1 if r == 1 else 0) for r in args.ratios]
    variants: dict[str, Callable[[], Any]] = {}
    for vocab in vocabs:
        counts = zipf_counts(vocab)
        batch = synthetic_batch(counts, args.batch_size, args.seq_len)
        for kind in ("sampled", "full"):
            sections = shape_sections(vocab, args)
            config = config_from_dict({**sections, "model": {**sections["model"], "softmax": kind}})
            step = build_trainer(resolve(config, 1000), vocab, counts.tolist()).train_fn
            variants[f"{kind}_{vocab}"] = (lambda s, b: lambda: float(s(b)["loss"]))(step, batch)
    times = round_robin(variants, args.warmup, args.reps)
    results = []
    for vocab in vocabs:
        sampled = 1000 * statistics.median(times[f"sampled_{vocab}"])
        full = 1000 * statistics.median(times[f"full_{vocab}"])
        results.append({"vocab": vocab, "ratio": round(vocab / args.num_sampled, 2), "sampled_ms": round(sampled, 1),
                        "full_ms": round(full, 1), "full_over_sampled": round(full / sampled, 3),
                        "auto": choose_softmax(ModelConfig(num_sampled=args.num_sampled), vocab)[0]})
    tokens = args.batch_size * args.seq_len
    print(f"\nB={args.batch_size} T={args.seq_len} E={args.embedding_dim} H={args.hidden_dim} "
          f"num_sampled={args.num_sampled}; lmtrain fit's step; median of {args.reps} after {args.warmup} warm-up")
    print("| vocab | vocab / num_sampled | sampled ms | full ms | full / sampled | sampled tokens/s | full tokens/s "
          "| model.softmax=auto |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['vocab']:,} | {r['ratio']:g} | {r['sampled_ms']:.1f} | {r['full_ms']:.1f} | "
              f"{r['full_over_sampled']:.2f} | {tokens / r['sampled_ms'] * 1000:,.0f} | "
              f"{tokens / r['full_ms'] * 1000:,.0f} | {r['auto']} |")
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
