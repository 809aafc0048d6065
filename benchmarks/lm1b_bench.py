"""The One Billion Word model's shapes on this machine (Jozefowicz et al. 2016, lm_1b's
LSTM-2048-512): V = 793,471 words, E 512, one LSTM of 2,048 cells projected to 512 (LSTMP,
`model.proj_size`), 8,192 negatives, B 128 x T 20, untied as lm_1b, the defaults otherwise.

On a synthetic Zipf corpus (`large_vocab_bench.make_corpus`: every word once in a dictionary
document, so the word tokenizer reaches V, and Zipf text), each `lmtrain` command in a child
process with its peak RSS (`wait4`):
  fit        `--steps` steps of plain `lmtrain fit` (tokens/s from its log)
  eval       the validation split at two batch sizes (memory must stay flat), and `eval --text`
             of one line beside the same command on a tiny run: what loading a run costs
  export     the SavedModel
and, in one process, the compiled training step against the same model's LSTM and embedding
alone (`step_bench.floor_step`), and the fused LSTMP (2,048 -> 512) forward and backward
against the plain 2,048-unit fused LSTM at the same batch, round-robin, medians.

Usage: python benchmarks/lm1b_bench.py [--vocab 793471] [--steps 6] [--out runs/lm1b]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from large_vocab_bench import make_corpus, run  # noqa: E402

SHAPE = {"embedding_dim": 512, "hidden_dim": 2048, "proj_size": 512, "num_layers": 1, "num_sampled": 8192,
         "tie_weights": False, "batch_size": 128, "seq_len": 20}


def overrides(root: Path, corpus: str, vocab: int, shape: dict, steps: int, name: str) -> list[str]:
    return [f"data.corpus={corpus}", f"data.dir={root / ('data-' + name)}", "tokenizer.model_type=word",
            f"tokenizer.vocab_size={vocab}", f"model.embedding_dim={shape['embedding_dim']}",
            f"model.hidden_dim={shape['hidden_dim']}", f"model.proj_size={shape['proj_size']}",
            f"model.num_layers={shape['num_layers']}", f"model.num_sampled={shape['num_sampled']}",
            f"model.tie_weights={str(shape['tie_weights']).lower()}", f"train.batch_size={shape['batch_size']}",
            f"train.seq_len={shape['seq_len']}", f"train.max_steps={steps}", "train.epochs=1000",
            f"train.checkpoint_every={steps}", f"train.log_every={max(steps // 2, 1)}",
            f"train.run_dir={root / ('run-' + name)}"]


def weights_gb(vocab: int, shape: dict) -> float:
    from lmtrain.config.rules import parameter_count

    return 4 * parameter_count(shape["embedding_dim"], shape["hidden_dim"], shape["num_layers"], vocab,
                               shape["tie_weights"], None, shape["proj_size"]) / 1e9


def step_times(args: argparse.Namespace, shape: dict) -> dict:
    """In a child process: the compiled step, the floor, and the LSTM layers alone (medians, s)."""
    out = subprocess.run([sys.executable, __file__, "--step-only", "--vocab", str(args.vocab),
                          "--rounds", str(args.rounds), "--shape", json.dumps(shape)], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_steps(vocab: int, rounds: int, s: dict) -> dict:
    import tensorflow as tf
    from common import floor_step, round_robin, synthetic_batch, zipf_counts

    from lmtrain.config.files import config_from_dict
    from lmtrain.config.resolve import resolve
    from lmtrain.fit.trainer import build_trainer
    from lmtrain.keras.lstm import fused_lstm

    config = config_from_dict({"tokenizer": {"model_type": "word", "vocab_size": vocab},
                               "model": {k: s[k] for k in ("embedding_dim", "hidden_dim", "proj_size", "num_layers",
                                                           "num_sampled", "tie_weights")},
                               "train": {"batch_size": s["batch_size"], "seq_len": s["seq_len"]}})
    counts = zipf_counts(vocab)
    batch = synthetic_batch(counts, s["batch_size"], s["seq_len"])
    trainer = build_trainer(resolve(config, 10_000), vocab, counts.tolist(), total_steps=10_000)
    timers = {"step": lambda: trainer.train_fn(batch)["loss"],
              "floor": floor_step(trainer.model, trainer.optimizer, batch[0])}
    rng = tf.random.Generator.from_seed(0)
    b, t, e, h, p = s["batch_size"], s["seq_len"], s["embedding_dim"], s["hidden_dim"], s["proj_size"]
    x = rng.normal([b, t, e])
    for name, width, projection in (("lstm", h, None), ("lstmp", p, rng.normal([h, p]) * 0.02)):
        weights = [tf.Variable(rng.normal([e, 4 * h]) * 0.02), tf.Variable(rng.normal([width, 4 * h]) * 0.02),
                   tf.Variable(tf.zeros([4 * h]))] + ([tf.Variable(projection)] if projection is not None else [])

        @tf.function
        def layer_step(weights=weights, width=width, projection=projection) -> tf.Tensor:
            with tf.GradientTape() as tape:
                out, _, _ = fused_lstm(x, tf.zeros([b, width]), tf.zeros([b, h]), *weights[:3],
                                       projection=weights[3] if projection is not None else None)
                loss = tf.reduce_sum(out * out)
            return tape.gradient(loss, weights)[0][0, 0]

        timers[name] = layer_step
    times = round_robin(timers, warmup=1, reps=rounds)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=793_471)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--text-docs", type=int, default=12)
    p.add_argument("--doc-tokens", type=int, default=12_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--eval-batch", type=int, nargs=2, default=[16, 128])
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--shape", type=json.loads, default={}, metavar="JSON",
                   help=f"Change the model's shape, e.g. '{{\"hidden_dim\": 256}}' (default: lm_1b's, {SHAPE}).")
    p.add_argument("--step-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    shape = {**SHAPE, **args.shape}
    if args.step_only:
        print(json.dumps(measure_steps(args.vocab, args.rounds, shape)))
        return
    root = Path(tempfile.mkdtemp(prefix="lmtrain-lm1b-", dir=args.workdir))
    figures: dict = {"vocab": args.vocab, "shape": shape, "weights_gb": weights_gb(args.vocab, shape)}
    try:
        corpus = make_corpus(root / "corpus", argparse.Namespace(vocab=args.vocab, text_docs=args.text_docs,
                                                                 doc_tokens=args.doc_tokens))
        big = overrides(root, corpus, args.vocab, shape, args.steps, "big")
        tiny_shape = {**shape, "embedding_dim": 16, "hidden_dim": 32, "proj_size": 16, "num_sampled": 64}
        tiny_corpus = make_corpus(root / "tiny-corpus", argparse.Namespace(vocab=2000, text_docs=4, doc_tokens=2000))
        tiny = overrides(root, tiny_corpus, 2000, tiny_shape, 2, "tiny")
        figures["prepare"] = run("prepare", big)
        figures["fit"] = run("fit", big)
        line = root / "line.txt"
        line.write_text("a line of text to score\n")
        figures["eval"] = []
        for batch in args.eval_batch:
            r = run("eval", big, "--split", "valid", "--json", "--batch-size", str(batch))
            result = json.loads(r["stdout"].strip().splitlines()[-1])
            figures["eval"].append({"batch": batch, "tokens": result["tokens"], "perplexity": result["perplexity"],
                                    "tokens_per_s": result["tokens"] / result["seconds"],
                                    "peak_rss_gb": r["peak_rss_gb"]})
        figures["text"] = run("eval", big, "--text", str(line), "--json")
        for verb in ("prepare", "fit"):
            run(verb, tiny)
        figures["tiny_text"] = run("eval", tiny, "--text", str(line), "--json")
        figures["export"] = run("export", big, "--out", str(root / "export"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures["steps"] = step_times(args, shape)
    report(figures)


def report(f: dict) -> None:
    s, w = f["steps"], f["weights_gb"]
    h = f["shape"]
    print(f"\nV {f['vocab']:,}, E {h['embedding_dim']}, LSTM {h['hidden_dim']} -> {h['proj_size']}, "
          f"{h['num_sampled']:,} negatives, B {h['batch_size']} x T {h['seq_len']}, untied; weights {w:.2f} GB; "
          f"{os.cpu_count()} cores. Peak RSS of each whole command.\n")
    print("| what | figure |\n|---|---:|")
    print(f"| `lmtrain fit` peak RSS | {f['fit']['peak_rss_gb']:.2f} GB |")
    tokens = h["batch_size"] * h["seq_len"]
    print(f"| compiled step (median) | {s['step']:.2f} s ({tokens / s['step']:,.0f} tokens/s) |")
    print(f"| LSTM + embedding alone, same optimizer (the floor) | {s['floor']:.2f} s |")
    print(f"| step / floor | {s['step'] / s['floor']:.2f} |")
    print(f"| fused LSTMP {h['hidden_dim']} -> {h['proj_size']}, forward + backward | {s['lstmp']:.3f} s |")
    print(f"| fused LSTM {h['hidden_dim']}, forward + backward | {s['lstm']:.3f} s |")
    print(f"| LSTMP / LSTM | {s['lstmp'] / s['lstm']:.2f} |")
    for e in f["eval"]:
        print(f"| `eval --split valid --batch-size {e['batch']}` | {e['peak_rss_gb']:.2f} GB, "
              f"{e['tokens_per_s']:,.0f} tokens/s |")
    above = f["text"]["peak_rss_gb"] - f["tiny_text"]["peak_rss_gb"]
    print(f"| `eval --text` of one line | {f['text']['peak_rss_gb']:.2f} GB ({above:.2f} GB above a tiny run: "
          f"{above / w:.2f}x the weights) |")
    print(f"| `export` (SavedModel) peak RSS | {f['export']['peak_rss_gb']:.2f} GB |")
    print(f"| `prepare` | {f['prepare']['seconds']:.0f} s, {f['prepare']['peak_rss_gb']:.2f} GB |")
    print("\n" + json.dumps({k: v for k, v in f.items() if k not in ("fit", "text", "tiny_text", "export", "prepare")}
                            | {k: {"seconds": f[k]["seconds"], "peak_rss_gb": f[k]["peak_rss_gb"]}
                               for k in ("fit", "text", "tiny_text", "export", "prepare")}))


if __name__ == "__main__":
    main()
