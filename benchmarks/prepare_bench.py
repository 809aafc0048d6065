"""`lmtrain prepare` at scale: end-to-end MB/s and peak memory on generated corpora.

For each size, writes a corpus of that many MB on the fly (lines drawn at random from the demo
plays, in files of `--doc-mb` MB, one document each; never kept), then runs the real CLI,
`lmtrain prepare`, in a child process: tokenizer training on a bounded sample
(`tokenizer.max_sentences`), encoding and TFRecord shards, meta.json. Wall time covers the whole
command (interpreter and TensorFlow start-up included). Memory is reported twice: the high-water
mark of the largest process (from `wait4`: prepare itself or one encoding worker) and the peak of
the sum over prepare and all its worker processes (sampled from /proc every 0.1 s), so each size
is measured on its own. Peak memory flat across sizes is the point.

Each corpus is also written as JSON Lines compressed with zstd (`--formats txt jsonl.zst`): the
same lines, cut into records of about `--record-kb` KB of text (`{"text": ..., "id": N}`), in
files holding as much text as the .txt files. MB/s counts the text in both, so the two rows
compare the cost of reading the format (decompression and JSON parsing) on the same text.

Usage: python benchmarks/prepare_bench.py [--sizes-mb 200 1024] [--formats txt jsonl.zst] [--max-sentences 200000]
Prints a Markdown table, then one JSON line.
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

from lmtrain.config.schema import TokenizerConfig
from lmtrain.data.corpus import list_documents
from lmtrain.data.meta import load_meta

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[200, 1024])
    p.add_argument("--doc-mb", type=float, default=32, help="Size of each generated document (file).")
    p.add_argument("--formats", nargs="+", default=["txt", "jsonl.zst"], choices=["txt", "jsonl.zst"])
    p.add_argument("--record-kb", type=float, default=4, help="Text per JSON Lines record.")
    p.add_argument("--max-sentences", type=int, default=None,
                   help="tokenizer.max_sentences for the run (default: the config's default, what users get).")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="Extra config override (repeatable).")
    p.add_argument("--workdir", type=Path, default=None, help="Where corpora are written (default: a temp dir).")
    args = p.parse_args()

    lines = [line for doc in list_documents(["shakespeare"]) for line in doc.lines() if line.strip()]
    root = Path(tempfile.mkdtemp(prefix="lmtrain-prepare-bench-", dir=args.workdir))
    results = []
    try:
        for size in args.sizes_mb:
            corpus = root / f"corpus-{size:g}mb"
            written = generate(corpus, lines, int(size * 2**20), int(args.doc_mb * 2**20))
            for fmt in args.formats:
                source = corpus if fmt == "txt" else to_jsonl_zst(corpus, root / f"jsonl-{size:g}mb", args.record_kb)
                results.append({"format": fmt, **run_prepare(source, root / f"data-{size:g}mb", written, args)})
                shutil.rmtree(root / f"data-{size:g}mb")
                if source != corpus:
                    shutil.rmtree(source)
            shutil.rmtree(corpus)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    sample = f"{args.max_sentences:,}" if args.max_sentences else f"{TokenizerConfig().max_sentences:,} (default)"
    print(f"\nlmtrain prepare, demo config (unigram 8k), tokenizer.max_sentences={sample}, "
          f"{os.cpu_count()} cores\n")
    print("| corpus (text) | format | files | tokens | wall time | MB/s of text | peak RSS, largest process | "
          "peak RSS, all processes |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['corpus_mb']:,.1f} MB | {r['format']} | {r['documents']} | {r['tokens']:,} | "
              f"{r['seconds']:.1f} s | "
              f"{r['mb_per_s']:.1f} | {r['peak_rss_gb']:.2f} GB | {r['peak_tree_rss_gb']:.2f} GB |")
    print(json.dumps({"results": results}))


def generate(directory: Path, lines: list[str], total: int, per_doc: int) -> int:
    """Write about `total` bytes of lines drawn at random (seeded) into files of `per_doc` bytes."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    encoded = [line.encode("utf-8") + b"\n" for line in lines]
    mean = sum(map(len, encoded)) / len(encoded)
    written, doc = 0, 0
    while written < total:
        target = min(per_doc, total - written)
        with open(directory / f"doc-{doc:05d}.txt", "wb") as fh:
            size = 0
            while size < target:
                count = int(min(65536, (target - size) / mean + 1))
                block = b"".join(encoded[i] for i in rng.integers(0, len(encoded), count))
                fh.write(block)
                size += len(block)
        written += size
        doc += 1
    return written


def to_jsonl_zst(corpus: Path, out: Path, record_kb: float) -> Path:
    """The text files of `corpus` as .jsonl.zst files of records of about `record_kb` KB of
    whole lines each, streamed (one record in memory at a time)."""
    import zstandard

    out.mkdir(parents=True)
    limit, n = int(record_kb * 1024), 0
    for path in sorted(corpus.iterdir()):
        with open(path, encoding="utf-8") as src, open(out / f"{path.stem}.jsonl.zst", "wb") as raw, \
                zstandard.ZstdCompressor(level=3).stream_writer(raw) as dst:
            record: list[str] = []
            size = 0
            for line in src:
                record.append(line)
                size += len(line)
                if size >= limit:
                    dst.write((json.dumps({"text": "".join(record), "id": n}) + "\n").encode())
                    record, size, n = [], 0, n + 1
            if record:
                dst.write((json.dumps({"text": "".join(record), "id": n}) + "\n").encode())
                n += 1
    return out


def run_prepare(corpus: Path, data: Path, corpus_bytes: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "lmtrain", "prepare", str(DEMO), "-q",
               "--set", f"data.corpus={corpus}", "--set", f"data.dir={data}"]
    if args.max_sentences:
        command += ["--set", f"tokenizer.max_sentences={args.max_sentences}"]
    for override in args.overrides:
        command += ["--set", override]
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: nothing can block the child
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        peak_tree = 0
        while True:  # sample the memory of prepare and its workers until it exits
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, tree_rss(proc.pid))
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # reaped by wait4 already
        if code != 0:
            log.seek(0)
            raise SystemExit(f"prepare failed ({code}):\n{log.read().decode()[-3000:]}")
    meta = load_meta(data / "meta.json")
    mb = corpus_bytes / 2**20
    return {
        "corpus_mb": mb,
        "documents": sum(len(v) for v in meta.documents.values()),
        "tokens": sum(s.tokens for s in meta.splits.values()),
        "seconds": seconds,
        "mb_per_s": mb / seconds,
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,  # ru_maxrss is in KiB on Linux
        "peak_tree_rss_gb": max(peak_tree, usage.ru_maxrss * 1024) / 1e9,
    }


def tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc (0 where unreadable)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


if __name__ == "__main__":
    main()
