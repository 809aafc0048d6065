"""`lmtrain eval`: exact full-softmax perplexity of a split, plus length-normalised metrics.

Token perplexity depends on the tokenizer, so it cannot compare a BPE model with a word model.
The total negative log-likelihood of a split can be normalised by units every tokenizer shares:
bytes (bits per byte) and whitespace words (word-level perplexity), using the counts `prepare`
measured on the raw text of that split.

The perplexity counts every predicted token, `<unk>` included: on a corpus whose rare words are
already `<unk>` in the text (Penn Treebank, WikiText) that is the number papers report. Beside
it come the out-of-vocabulary count (`<unk>` targets) and the perplexity without them, as
SRILM's `-ppl` prints it; see docs/options.md for which to compare with what.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmtrain.config.schema import Config
from lmtrain.data.formats import document_lines
from lmtrain.data.records import split_files
from lmtrain.data.tokenizer import UNK_ID, Tokenizer
from lmtrain.errors import LmtrainError
from lmtrain.model import LanguageModel
from lmtrain.paths import DataPaths
from lmtrain.scoring import perplexity, score_ids, split_nll
from lmtrain.use.load import load_run


@dataclass(frozen=True)
class EvalResult:
    split: str
    step: int
    tokens: int  # predicted tokens
    loss: float  # nats per token
    perplexity: float  # every predicted token counted, <unk> included: what published results report
    bits_per_byte: float
    word_perplexity: float
    seconds: float = 0.0  # time spent scoring (not loading the model)
    oov_tokens: int = 0  # predicted tokens that are <unk> (words outside the vocabulary)
    perplexity_without_oov: float | None = None  # over the other tokens only, as SRILM's `ppl` counts
    scoring: str = ""  # how the text was read: the state carried, or zero-state windows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def oov_rate(self) -> float:
        return self.oov_tokens / max(self.tokens, 1)


def evaluate(config: Config, split: str = "test", progress: bool = True, batch_size: int | None = None,
             windows: bool = False) -> EvalResult:
    """Evaluate the trained model of `config.train.run_dir` on a prepared split of `config.data.dir`.

    The split is read with the state carried through a few contiguous streams
    (`scoring.split_nll`), or with `windows` as zero-state windows of the run's
    `train.seq_len`. `batch_size` (default: the run's `train.batch_size`) bounds the streams and
    sets the tokens scored per call. Memory does not grow with it beyond the hidden states: the
    full-softmax logits are computed in blocks of at most `softmax.LOGITS_BUDGET` floats, never
    batch x time x vocabulary.
    """
    trained = load_run(Path(config.train.run_dir))
    data = DataPaths(Path(config.data.dir))
    if not trained.meta.has_split(split):
        raise LmtrainError(
            f"--split {split}: no {split} data in {data.root} (is data.{split}_fraction 0?); "
            f"run `lmtrain prepare` or pick another split"
        )
    stats = trained.meta.splits[split]
    files = split_files(data, split, stats.shard_bytes)
    t = trained.config.train
    started = time.perf_counter()
    score = split_nll(trained.model, files, t.seq_len, batch_size or t.batch_size, stats.tokens, windows=windows,
                      progress=progress)
    return metrics(split, trained.step, score.nll, score.tokens, stats.bytes, stats.words,
                   time.perf_counter() - started, score.unk_nll, score.unk_tokens, score.how)


def evaluate_text(model: LanguageModel, tokenizer: Tokenizer, text: str, step: int) -> EvalResult:
    """The metrics of a split, for any text read as one document (`lmtrain eval --text`)."""
    lines = document_lines(text)
    ids = np.asarray(tokenizer.encode_document(text), dtype=np.int64)
    n_bytes = sum(len(line.encode("utf-8")) + 1 for line in lines)
    words = sum(len(line.split()) for line in lines)
    started = time.perf_counter()
    nll = -score_ids(model, ids.tolist())
    unk = ids == UNK_ID
    return metrics("text", step, float(nll.sum()), len(ids), n_bytes, words, time.perf_counter() - started,
                   float(nll[unk].sum()), float(unk.sum()), "state carried through the text")


def metrics(split: str, step: int, total_nll: float, tokens: float, n_bytes: int, words: int, seconds: float = 0.0,
            unk_nll: float = 0.0, unk_tokens: float = 0.0, scoring: str = "") -> EvalResult:
    """Turn a total NLL (nats) into per-token, per-byte and per-word figures, with and without
    the `<unk>` tokens (`unk_nll` of the total falls on `unk_tokens` of them)."""
    loss = total_nll / tokens
    known = tokens - unk_tokens
    return EvalResult(
        split=split,
        step=step,
        tokens=int(tokens),
        loss=loss,
        perplexity=perplexity(loss),
        bits_per_byte=total_nll / (math.log(2) * max(n_bytes, 1)),
        word_perplexity=perplexity(total_nll / max(words, 1)),
        seconds=seconds,
        oov_tokens=int(unk_tokens),
        perplexity_without_oov=perplexity((total_nll - unk_nll) / known) if known > 0 else None,
        scoring=scoring,
    )
