"""`lmtrain eval --per-line`: every line of a text file (record of a JSON Lines file) scored on
its own and written as one JSON object per line, in the input's order.

Each text is read as `TrainedModel.score` reads it (one document: its lines, each then `<nl>`,
then `</s>`), so the numbers are those of `lm.evaluate(text)` line by line. The input is
streamed `CHUNK_TEXTS` texts at a time; within a chunk texts are sorted by length into batches
of about `batch_size` x `train.seq_len` tokens, what `eval` scores per call
(`scoring.BatchScorer`), so padding costs little and short lines fill wide batches; the chunk is
written back in input order:
memory stays flat whatever the file's size. The whole input is read once before any scoring,
so a bad record is a one-line error before anything is written. Output goes to a temporary
file beside `--out`, renamed into place at the end; Ctrl-C stops after the current batch and
keeps every line scored until then, each one whole.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from lmtrain.data import formats
from lmtrain.data.corpus import Document
from lmtrain.data.tokenizer import EOS_ID
from lmtrain.errors import InputError, Interrupted, LmtrainError
from lmtrain.progress import progress_bar
from lmtrain.scoring import BatchScorer, perplexity
from lmtrain.signals import StopSignals
from lmtrain.use.load import TrainedRun

CHUNK_TEXTS = 8192  # texts read, encoded and sorted by length at a time


@dataclass(frozen=True)
class _Text:
    line: int  # where it is in the input, from 1
    text: str
    id: object


@dataclass(frozen=True)
class PerLineResult:
    texts: int  # lines (records) scored
    tokens: int  # predicted tokens, all texts together
    out: Path | None  # None: standard output
    seconds: float


def score_file(run: TrainedRun, source: Path, out: Path | None, batch_size: int, text_field: str = "text",
               id_field: str | None = None, progress: bool = True, stdout: TextIO | None = None) -> PerLineResult:
    """Score each text of `source` (of a JSON Lines file: each record's `text_field`) and write
    its JSON object to `out` (None: `stdout`), `batch_size` x `train.seq_len` tokens at a time."""
    doc = _document(source, text_field, id_field)
    if out is not None and out.resolve() == source.resolve():
        raise InputError(f"--out: {out} is the input file; choose another path")
    total = sum(1 for _ in _texts(doc, id_field))  # reads (and checks) everything before writing
    scorer = BatchScorer(run.model)
    started = time.perf_counter()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}") if out is not None else None
    sink: TextIO
    try:
        sink = open(tmp, "w", encoding="utf-8") if tmp is not None else (stdout or sys.stdout)
    except OSError as exc:
        raise LmtrainError(f"--out: cannot write {out}: {exc.strerror}") from None
    scored = tokens = 0
    finished = False
    try:
        with StopSignals() as stop, progress_bar(total=total, desc="score", unit="line", disable=not progress) as bar:
            budget = batch_size * run.config.train.seq_len
            for chunk in _chunks(_texts(doc, id_field), CHUNK_TEXTS):
                rows, n_tokens, complete = _score_chunk(run, scorer, chunk, budget, lambda: stop.signum is not None)
                sink.write("".join(rows))
                sink.flush()
                scored += len(rows)
                tokens += n_tokens
                bar.update(len(rows))
                if not complete or stop.signum is not None:
                    break
            finished = stop.signum is None
        if tmp is not None:
            sink.close()
            os.replace(tmp, out)
    except BrokenPipeError:
        if tmp is not None:
            raise LmtrainError(f"--out: cannot write {out}: broken pipe; {out} is unchanged") from None
        # The reader of standard output went away (`| head`): stop quietly, as shell tools do.
        _silence_stdout()
        return PerLineResult(scored, tokens, None, time.perf_counter() - started)
    except OSError as exc:
        if tmp is None:
            raise LmtrainError(f"--per-line: cannot write to standard output: {exc.strerror}") from None
        raise LmtrainError(f"--out: cannot write {out}: {exc.strerror}; {out} is unchanged") from None
    finally:
        if tmp is not None:
            sink.close()
            tmp.unlink(missing_ok=True)
    if not finished:
        where = out if out is not None else "standard output"
        raise Interrupted(f"scored {scored:,} of {total:,} lines; {where} holds them, each complete", stop.signum)
    return PerLineResult(scored, tokens, out, time.perf_counter() - started)


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit raises no second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test runner's capture)
        pass


def _document(source: Path, text_field: str, id_field: str | None) -> Document:
    if not source.is_file():
        raise InputError(f"--per-line: {source} is not a file")
    kind = formats.kind_of(source)
    if kind == "parquet":
        raise InputError(f"--per-line: {source} is a Parquet file; this reads text or JSON Lines (.jsonl) files")
    if id_field is not None and kind != "jsonl":
        raise InputError(f"--id-field: {source} is plain text, which has no fields; give a JSON Lines (.jsonl) file")
    return Document(str(source), source, kind=kind, text_field=text_field)


def _texts(doc: Document, id_field: str | None) -> Iterator[_Text]:
    for block in doc.blocks():
        for i, record in enumerate(doc.texts(block, id_field=id_field)):
            if record is not None:
                yield _Text(block.first + i + 1, record[0], record[1])


def _chunks(texts: Iterator[_Text], size: int) -> Iterator[list[_Text]]:
    chunk: list[_Text] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _score_chunk(run: TrainedRun, scorer: BatchScorer, chunk: list[_Text], budget: int, should_stop
                 ) -> tuple[list[str], int, bool]:
    """The JSON lines of the chunk's texts in input order, their tokens, and whether all were
    scored (when `should_stop` says yes after a batch, only the lines before the first text not
    yet scored are returned)."""
    lines = [formats.document_lines(t.text) for t in chunk]
    flat = run.tokenizer.encode_stream([line for text in lines for line in text], records=list(map(len, lines)))
    ids = np.split(flat, np.flatnonzero(flat == EOS_ID)[:-1] + 1)  # each text's ids, its </s> last
    log_probs = np.full(len(chunk), np.nan)
    batches = list(_batches([len(x) for x in ids], budget))
    for n, rows in enumerate(batches):
        log_probs[rows] = scorer.log_probs([ids[r] for r in rows])
        if should_stop() and n + 1 < len(batches):
            break
    done = int(np.argmax(np.isnan(log_probs))) if np.isnan(log_probs).any() else len(chunk)
    rows_out = [_json_line(chunk[i], lines[i], ids[i], float(log_probs[i])) for i in range(done)]
    return rows_out, sum(len(ids[i]) for i in range(done)), done == len(chunk)


def _batches(lengths: list[int], budget: int) -> Iterator[list[int]]:
    """Indices of texts in batches of similar lengths, each padded to at most `budget` tokens
    (one text alone where it is longer)."""
    batch: list[int] = []
    for i in np.argsort(lengths, kind="stable"):
        if batch and lengths[i] * (len(batch) + 1) > budget:  # ascending: the new text is the longest
            yield batch
            batch = []
        batch.append(int(i))
    if batch:
        yield batch


def _json_line(text: _Text, lines: list[str], ids: np.ndarray, log_prob: float) -> str:
    n_bytes = sum(len(line.encode("utf-8")) + 1 for line in lines)
    row: dict[str, object] = {"line": text.line}
    if text.id is not None:
        row["id"] = text.id
    row.update(tokens=len(ids), log_prob=round(log_prob, 6), perplexity=_finite(perplexity(-log_prob / len(ids))),
               bits_per_byte=round(-log_prob / (math.log(2) * max(n_bytes, 1)), 6))
    return json.dumps(row, ensure_ascii=False) + "\n"


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None
