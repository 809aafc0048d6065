"""`lmtrain eval --per-line` against `lmtrain eval` on the same tokens: tokens/s side by side.

Takes a trained run (default: the demo's, `make demo` first) and writes a file of `--lines`
lines drawn in order from the demo plays (cycled). Then, in one process:
- per-line: `perline.score_file`, the code `eval --per-line FILE --out OUT` runs, with the run's
  `train.batch_size` (the CLI's default);
- eval: the same lines encoded as documents (each line's ids, `<nl>`, `</s>`), written as a
  prepared split with prepare's `ShardWriter`, and scored by `scoring.split_nll`, the code
  `lmtrain eval` runs: with the state carried through a few streams (the default), and as
  windows of `train.seq_len` from a zero state (`eval --windows`), taking turns, `--rounds` times.
Both score every token of the same stream with the full softmax; tokens/s counts predicted tokens.
Memory is the process's peak RSS after each (flat in the file's size is the point).

Usage: python benchmarks/perline_bench.py [configs/demo.yaml] [--lines 100000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from lmtrain.config.files import load_config
from lmtrain.data.corpus import list_documents
from lmtrain.data.records import split_files
from lmtrain.data.shards import ShardWriter
from lmtrain.paths import DataPaths
from lmtrain.scoring import split_nll
from lmtrain.use.load import load_run
from lmtrain.use.perline import score_file

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, nargs="?", default=DEMO)
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=2, help="eval's two ways, timed in turns this many times (best kept)")
    args = p.parse_args()
    cfg = load_config(args.config)
    run = load_run(Path(cfg.train.run_dir))
    t = run.config.train
    plays = (line for doc in itertools.cycle(list_documents(["shakespeare"])) for line in doc.lines() if line.strip())
    lines = list(itertools.islice(plays, args.lines))

    with tempfile.TemporaryDirectory(prefix="lmtrain-perline-bench-") as tmp:
        root = Path(tmp)
        source = root / "lines.txt"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        started = time.perf_counter()
        result = score_file(run, source, root / "out.jsonl", t.batch_size, progress=False)
        per_line_s = time.perf_counter() - started
        per_line_rss = _peak_rss_gb()
        log_probs = [json.loads(row)["log_prob"] for row in (root / "out.jsonl").read_text().splitlines()]

        data = DataPaths(root / "data")
        data.root.mkdir()
        writer = ShardWriter(data, "test", cfg.data.shard_tokens)
        for chunk in range(0, len(lines), 10_000):
            part = lines[chunk:chunk + 10_000]
            writer.write(run.tokenizer.encode_stream(part, records=[1] * len(part)))
        tokens = writer.tokens
        files = split_files(data, "test", writer.close())
        seconds: dict[bool, float] = {False: float("inf"), True: float("inf")}
        scores = {}
        for _ in range(args.rounds):
            for windows in (False, True):
                started = time.perf_counter()
                score = split_nll(run.model, files, t.seq_len, t.batch_size, tokens, windows=windows)
                seconds[windows] = min(seconds[windows], time.perf_counter() - started)
                scores[windows] = score

    count = scores[False].tokens
    eval_s = seconds[False]
    per_line_tps, eval_tps, windows_tps = result.tokens / per_line_s, count / eval_s, count / seconds[True]
    print(f"\nper-line scoring vs eval on the same {result.tokens:,} tokens ({result.texts:,} lines), "
          f"run {cfg.train.run_dir} (step {run.step}, vocabulary {run.model.vocab_size:,}), batch {t.batch_size}\n")
    print("| path | what it scores | tokens | seconds | tokens/s | nats/token | peak RSS |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print(f"| `eval --per-line` | each line from `</s>`, zero state | {result.tokens:,} | {per_line_s:.1f} | "
          f"{per_line_tps:,.0f} | {-np.sum(log_probs) / result.tokens:.4f} | {per_line_rss:.2f} GB |")
    for windows, tps in ((False, eval_tps), (True, windows_tps)):
        score = scores[windows]
        flag = " --windows" if windows else ""
        print(f"| `eval{flag}` (split_nll) | {score.how} | {int(count):,} | {seconds[windows]:.1f} | "
              f"{tps:,.0f} | {score.nll / count:.4f} | {_peak_rss_gb():.2f} GB |")
    print(f"\nper-line / eval tokens/s: {per_line_tps / eval_tps:.2f}x; eval (state carried) / eval --windows: "
          f"{eval_tps / windows_tps:.2f}x")
    print(json.dumps({"tokens": result.tokens, "per_line_tokens_per_s": per_line_tps, "eval_tokens_per_s": eval_tps,
                      "windows_tokens_per_s": windows_tps, "ratio": per_line_tps / eval_tps,
                      "carried_over_windows": eval_tps / windows_tps}))


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


if __name__ == "__main__":
    main()
