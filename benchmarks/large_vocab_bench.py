"""A 200k vocabulary end to end: prepare, fit, eval and generate, with eval's speed and memory.

Writes a synthetic corpus on the fly (never kept): `--vocab` x 1.05 made-up words, every one of
them in a "dictionary" document that lands in the training split, plus documents of lines drawn
from a Zipf law over the same words. Then runs the real CLI, each command in a child process:
  prepare   word-level SentencePiece with `tokenizer.vocab_size = --vocab`
  fit       `--steps` sampled-softmax steps (LazyAdam; full-softmax validation at the end)
  eval      the validation split at each of `--eval-batch` sizes: tokens/s of the scoring
            (as `eval --json` reports it) and peak RSS of the command (`wait4`). Unchunked logits
            would take batch x seq_len x V x 4 bytes; with the
            chunked full softmax, memory must stay flat as the batch grows.
  generate  `--gen-tokens` tokens from a prompt
Prints a Markdown table of the eval figures, then one JSON line.

Usage: python benchmarks/large_vocab_bench.py [--vocab 200000] [--steps 30] [--eval-batch 16 256]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=200_000)
    p.add_argument("--text-docs", type=int, default=24, help="Zipf documents (besides the dictionary).")
    p.add_argument("--doc-tokens", type=int, default=10_000, help="Words per Zipf document.")
    p.add_argument("--embedding-dim", type=int, default=256)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=35)
    p.add_argument("--num-sampled", type=int, default=1024)
    p.add_argument("--eval-batch", type=int, nargs="+", default=[16, 256])
    p.add_argument("--gen-tokens", type=int, default=50)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="lmtrain-large-vocab-", dir=args.workdir))
    try:
        corpus = make_corpus(root / "corpus", args)
        overrides = [
            f"data.corpus={corpus}", f"data.dir={root / 'data'}", "tokenizer.model_type=word",
            f"tokenizer.vocab_size={args.vocab}",
            f"model.embedding_dim={args.embedding_dim}", f"model.hidden_dim={args.hidden_dim}",
            f"model.num_sampled={args.num_sampled}", f"train.run_dir={root / 'run'}",
            f"train.batch_size={args.batch_size}", f"train.seq_len={args.seq_len}", f"train.max_steps={args.steps}",
            "train.epochs=1000", f"train.checkpoint_every={args.steps}", f"train.log_every={max(args.steps // 3, 1)}",
        ]
        steps = {"prepare": run("prepare", overrides)}
        steps["fit"] = run("fit", overrides)
        evals = []
        for batch in args.eval_batch:
            r = run("eval", overrides, "--split", "valid", "--json", "--batch-size", str(batch))
            result = json.loads(r["stdout"].strip().splitlines()[-1])
            logits_gb = batch * args.seq_len * args.vocab * 4 / 1e9
            evals.append({"batch": batch, "tokens": result["tokens"], "perplexity": result["perplexity"],
                          "seconds": r["seconds"], "tokens_per_s": result["tokens"] / result["seconds"],
                          "peak_rss_gb": r["peak_rss_gb"], "unchunked_logits_gb": logits_gb})
        gen = run("generate", overrides, "--max-tokens", str(args.gen_tokens), "--ignore-eos", "--seed", "1")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nV = {args.vocab:,}, embedding {args.embedding_dim}, LSTM {args.hidden_dim}, "
          f"seq_len {args.seq_len}; {os.cpu_count()} cores. Whole commands (start-up and model load included).\n")
    print(f"prepare {steps['prepare']['seconds']:.0f} s (peak RSS {steps['prepare']['peak_rss_gb']:.2f} GB); "
          f"fit {args.steps} steps {steps['fit']['seconds']:.0f} s (peak RSS {steps['fit']['peak_rss_gb']:.2f} GB); "
          f"generate {args.gen_tokens} tokens {gen['seconds']:.0f} s (peak RSS {gen['peak_rss_gb']:.2f} GB)\n")
    print("| eval batch | tokens | tokens/s (scoring) | whole command | peak RSS | logits if not chunked "
          "| perplexity |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for e in evals:
        print(f"| {e['batch']} | {e['tokens']:,} | {e['tokens_per_s']:,.0f} | {e['seconds']:.0f} s | "
              f"{e['peak_rss_gb']:.2f} GB | {e['unchunked_logits_gb']:.1f} GB | {e['perplexity']:,.1f} |")
    print(json.dumps({"vocab": args.vocab, "prepare": strip(steps["prepare"]), "fit": strip(steps["fit"]),
                      "generate": strip(gen), "eval": evals}))


def make_corpus(directory: Path, args: argparse.Namespace) -> str:
    """The dictionary document (every word, so the word tokenizer can reach `--vocab`) and
    Zipf-distributed text documents, as a mapping of splits (`data.corpus`): the dictionary and
    all but two text documents train, one text document each for valid and test."""
    for split in ("train", "valid", "test"):
        (directory / split).mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = unique_words(rng, int(args.vocab * 1.05))
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    zipf = 1.0 / ranks
    zipf /= zipf.sum()
    for d in range(args.text_docs):
        ids = rng.choice(len(words), size=args.doc_tokens, p=zipf)
        lines = [" ".join(words[ids[i:i + 12]]) for i in range(0, len(ids), 12)]
        split = "valid" if d == 0 else "test" if d == 1 else "train"
        (directory / split / f"text-{d:03d}.txt").write_text("\n".join(lines) + "\n")
    dictionary = "\n".join(" ".join(words[i:i + 12]) for i in range(0, len(words), 12)) + "\n"
    (directory / "train" / "dictionary.txt").write_text(dictionary)
    return "{" + ", ".join(f"{split}: {directory / split}" for split in ("train", "valid", "test")) + "}"


def unique_words(rng: np.random.Generator, n: int) -> np.ndarray:
    found: set[str] = set()
    while len(found) < n:
        lengths = rng.integers(3, 10, size=n)
        for length in lengths:
            found.add("".join(rng.choice(LETTERS, size=length)))
            if len(found) == n:
                break
    return np.array(sorted(found))


def run(verb: str, overrides: list[str], *extra: str) -> dict:
    """One `lmtrain` command in a child process: its wall time, peak RSS and output."""
    command = [sys.executable, "-m", "lmtrain", verb, *(["-q"] if verb in ("prepare", "fit") else []), *extra]
    for override in overrides:
        command += ["--set", override]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"lmtrain {verb} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9, "stdout": stdout}


def strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "stdout"}


if __name__ == "__main__":
    main()
