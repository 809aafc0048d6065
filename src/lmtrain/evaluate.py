"""`lmtrain eval`: exact full-softmax perplexity of a split, plus length-normalised metrics.

Token perplexity depends on the tokenizer, so it cannot compare a BPE model with a word model.
The total negative log-likelihood of a split can be normalised by units every tokenizer shares:
bytes (bits per byte) and whitespace words (word-level perplexity), using the counts `prepare`
measured on the raw text of that split.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmtrain.config import Config
from lmtrain.errors import LmtrainError
from lmtrain.formats import document_lines
from lmtrain.model import LanguageModel
from lmtrain.paths import DataPaths
from lmtrain.records import split_files
from lmtrain.rundir import load_run
from lmtrain.scoring import perplexity, score_ids, split_nll
from lmtrain.tokenizer import Tokenizer


@dataclass(frozen=True)
class EvalResult:
    split: str
    step: int
    tokens: int  # predicted tokens
    loss: float  # nats per token
    perplexity: float
    bits_per_byte: float
    word_perplexity: float
    seconds: float = 0.0  # time spent scoring (not loading the model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(config: Config, split: str = "test", progress: bool = True, batch_size: int | None = None
             ) -> EvalResult:
    """Evaluate the trained model of `config.train.run_dir` on a prepared split of `config.data.dir`.

    `batch_size` windows are scored at once (default: the run's `train.batch_size`). Memory does
    not grow with it beyond the hidden states: the full-softmax logits are computed in blocks of
    at most `softmax.LOGITS_BUDGET` floats, never batch x time x vocabulary. A stateful run keeps
    its own batch size, which decides how the split is cut into streams.
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
    rows = t.batch_size if t.stateful or batch_size is None else batch_size
    started = time.perf_counter()
    total, count = split_nll(trained.model, files, t.seq_len, rows, progress=progress,
                             stream_tokens=stats.tokens if t.stateful else None)
    return metrics(split, trained.step, total, count, stats.bytes, stats.words, time.perf_counter() - started)


def evaluate_text(model: LanguageModel, tokenizer: Tokenizer, text: str, step: int) -> EvalResult:
    """The metrics of a split, for any text read as one document (`lmtrain eval --text`)."""
    lines = document_lines(text)
    ids = tokenizer.encode_document(text)
    n_bytes = sum(len(line.encode("utf-8")) + 1 for line in lines)
    words = sum(len(line.split()) for line in lines)
    started = time.perf_counter()
    total = -float(score_ids(model, ids).sum())
    return metrics("text", step, total, len(ids), n_bytes, words, time.perf_counter() - started)


def metrics(split: str, step: int, total_nll: float, tokens: float, n_bytes: int, words: int, seconds: float = 0.0
            ) -> EvalResult:
    """Turn a total NLL (nats) into per-token, per-byte and per-word figures."""
    loss = total_nll / tokens
    return EvalResult(
        split=split,
        step=step,
        tokens=int(tokens),
        loss=loss,
        perplexity=perplexity(loss),
        bits_per_byte=total_nll / (math.log(2) * max(n_bytes, 1)),
        word_perplexity=perplexity(total_nll / max(words, 1)),
        seconds=seconds,
    )
