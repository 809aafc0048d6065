"""`lmtrain eval`: exact full-softmax perplexity of a split, plus length-normalised metrics.

Token perplexity depends on the tokenizer, so it cannot compare a BPE model with a word model.
The total negative log-likelihood of a split can be normalised by units every tokenizer shares:
bytes (bits per byte) and whitespace words (word-level perplexity), using the counts `prepare`
measured on the raw text of that split.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmtrain.config import Config
from lmtrain.errors import LmtrainError
from lmtrain.paths import DataPaths
from lmtrain.records import split_files
from lmtrain.train import load_run, perplexity, split_nll


@dataclass(frozen=True)
class EvalResult:
    split: str
    step: int
    tokens: int  # predicted tokens
    loss: float  # nats per token
    perplexity: float
    bits_per_byte: float
    word_perplexity: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(config: Config, split: str = "test", progress: bool = True) -> EvalResult:
    """Evaluate the trained model of `config.train.run_dir` on a prepared split of `config.data.dir`."""
    trained = load_run(Path(config.train.run_dir))
    data = DataPaths(Path(config.data.dir))
    stats = trained.meta["splits"].get(split)
    if not stats or stats["tokens"] < 2:
        raise LmtrainError(
            f"--split {split}: no {split} data in {data.root} (is data.{split}_fraction 0?); "
            f"run `lmtrain prepare` or pick another split"
        )
    files = split_files(data, split, stats["shard_bytes"])
    t = trained.config.train
    total, count = split_nll(trained.model, files, t.seq_len, t.batch_size, progress=progress)
    return metrics(split, trained.step, total, count, stats)


def metrics(split: str, step: int, total_nll: float, tokens: float, stats: dict[str, int]) -> EvalResult:
    """Turn a total NLL (nats) into per-token, per-byte and per-word figures."""
    loss = total_nll / tokens
    return EvalResult(
        split=split,
        step=step,
        tokens=int(tokens),
        loss=loss,
        perplexity=perplexity(loss),
        bits_per_byte=total_nll / (math.log(2) * max(stats["bytes"], 1)),
        word_perplexity=perplexity(total_nll / max(stats["words"], 1)),
    )
