"""The library as a new user meets it: the README's model, their own word vocabulary, plain `model.fit`.

A user who replaces `Dense(V, "softmax")` with `lmtrain.keras.SampledSoftmax` builds their own
word vocabulary, usually sorted alphabetically (so ids are not frequency-ordered), and copies the
snippet: `Embedding(V, 64)` -> `LSTM(128)` -> `SampledSoftmax(V, num_sampled=256)` (half of V on a
tiny corpus), `LazyAdam(5e-3)`,
`--steps` steps of `model.fit` at batch 32, 35 tokens a row. This trains that model on the demo
corpus's words (34 plays to train, 2 to validate, as the demo splits them; words lower-cased, those seen fewer than
`--min-count` times in training become <unk>) and reports the validation perplexity (full
softmax, `model.evaluate`) of:
  - the snippet as written: no counts, no `adapt` (the running unigram proposal, and the
    running counts' log prior added to the logits);
  - `head.adapt(y)` first (the head's bias then starts at the log unigram, as `lmtrain fit`'s
    does), `counts=` (the same counts given to the constructor), and `adapt` with
    `bias_initializer="zeros"` (the start before that);
  - no setup and `adapt` with ids sorted by frequency, as Keras' `TextVectorization` sorts them;
  - `sampler="log_uniform"` (TensorFlow's default proposal) on the same alphabetical ids, and on
    ids sorted by frequency, where it is right;
  - `Dense(V, "softmax")` with Keras' Adam at the same rate and steps (what the head replaces);
  - the training text's unigram model (add-one), the floor any of them should beat.

Usage: python benchmarks/library_bench.py [--steps 300] [--runs NAME ...] [--embedding-dim 64 --hidden-dim 128]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from lmtrain.data.corpus import list_documents  # noqa: E402
from lmtrain.keras import LazyAdam, SampledSoftmax  # noqa: E402

BATCH, SEQ = 32, 35
WORD = re.compile(r"[a-z']+")
RUNS = ("no adapt", "adapt", "counts=", "adapt, zero bias", "log_uniform", "log_uniform, ids by frequency",
        "no adapt, ids by frequency", "adapt, ids by frequency", "Dense + Adam")


def words(docs) -> list[str]:  # type: ignore[no-untyped-def]
    out: list[str] = []
    for doc in docs:
        for line in doc.lines():
            out += WORD.findall(line.lower()) + ["<eos>"]
    return out


def windows(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = (len(ids) - 1) // SEQ
    return ids[:n * SEQ].reshape(n, SEQ), ids[1:n * SEQ + 1].reshape(n, SEQ)


def build(vocab: int, run: str, y: np.ndarray, embedding_dim: int = 64, hidden_dim: int = 128) -> keras.Model:
    keras.utils.set_random_seed(0)
    if run == "Dense + Adam":
        head = keras.layers.Dense(vocab, activation="softmax")
        loss, optimizer = "sparse_categorical_crossentropy", keras.optimizers.Adam(5e-3)
    else:
        sampler = "log_uniform" if "log_uniform" in run else None
        counts = np.bincount(y.ravel(), minlength=vocab) if run == "counts=" else None
        head = SampledSoftmax(vocab, num_sampled=min(256, vocab // 2), sampler=sampler, seed=0, counts=counts,
                              bias_initializer="zeros" if "zero bias" in run else None)
        loss, optimizer = head.loss, LazyAdam(5e-3)
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(vocab, embedding_dim),
                              keras.layers.LSTM(hidden_dim, return_sequences=True), head])
    if run.startswith("adapt"):
        head.adapt(y)  # after build, before training: the bias starts at the unigram unless told otherwise
    model.compile(optimizer=optimizer, loss=loss)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--min-count", type=int, default=3)
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--corpus", default="shakespeare", help="Text files or a directory (default: the demo's plays); "
                   "all but the last 4 documents train, the 2 before the last 2 validate.")
    args = p.parse_args()
    docs = list_documents([args.corpus])
    train_words, valid_words = words(docs[:-4]), words(docs[-4:-2])
    counts = collections.Counter(train_words)
    alphabetical = ["<unk>"] + sorted(w for w, c in counts.items() if c >= args.min_count)
    by_frequency = ["<unk>"] + [w for w, c in counts.most_common() if c >= args.min_count]
    vocab = len(alphabetical)
    print(f"{len(train_words):,} training words, {len(valid_words):,} validation words, V = {vocab:,} "
          f"(words seen at least {args.min_count} times)")
    rows = [("unigram model of the training text (add-one)", unigram(train_words, valid_words, alphabetical), "")]
    for run in args.runs:
        order = by_frequency if "by frequency" in run else alphabetical
        index = {w: i for i, w in enumerate(order)}
        encode = lambda ws: np.array([index.get(w, 0) for w in ws], np.int32)  # noqa: E731
        x, y = windows(encode(train_words))
        x_val, y_val = windows(encode(valid_words))
        take = np.random.default_rng(0).permutation(len(x))[:args.steps * BATCH]
        model = build(vocab, run, y[take], args.embedding_dim, args.hidden_dim)
        started = time.perf_counter()
        model.fit(x[take], y[take], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        seconds = time.perf_counter() - started
        ppl = float(np.exp(model.evaluate(x_val, y_val, batch_size=64, verbose=0)))
        rows.append((run, ppl, f"{seconds:.0f} s"))
        print(f"{run}: valid ppl {ppl:.1f} ({seconds:.0f} s of fit)", flush=True)
    print(f"\n{args.steps} steps of model.fit, batch {BATCH}, {SEQ} tokens a row, Embedding(V, {args.embedding_dim}) "
          f"-> LSTM({args.hidden_dim}); "
          f"V = {vocab:,}; validation perplexity with the full softmax\n")
    print("| run | valid ppl | fit time |\n|---|---:|---:|")
    for name, ppl, seconds in rows:
        print(f"| {name} | {ppl:.1f} | {seconds} |")


def unigram(train_words: list[str], valid_words: list[str], vocab: list[str]) -> float:
    index = {w: i for i, w in enumerate(vocab)}
    counts = np.bincount([index.get(w, 0) for w in train_words], minlength=len(vocab)) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-np.mean(log_p[[index.get(w, 0) for w in valid_words]])))


if __name__ == "__main__":
    main()
