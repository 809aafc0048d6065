"""`eval --per-line`: one JSON object per line (record), in order, with the numbers of
`lm.evaluate(text)`; bad input writes nothing; Ctrl-C keeps whole lines."""

from __future__ import annotations

import json
import random
import signal

import pytest
import zstandard
from helpers import (
    WORDS,
    assert_clean_error,
    cli,
    tiny_sections,
    write_config,
    write_corpus,
)

# Every test here prepares, fits or runs a benchmark.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("perline")
    corpus = write_corpus(root / "corpus")
    config = write_config(root / "tiny.yaml", tiny_sections(root, corpus))
    for verb in ("prepare", "fit"):
        r = cli(verb, config, "-q")
        assert r.exit_code == 0, r.output
    return root, config


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)  # lengths from empty to a few dozen words: batches sort them
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice([0, 1, 3, 8, 30]))) for _ in range(n)]


def test_every_line_gets_the_numbers_of_evaluate_in_input_order(trained, tmp_path):
    import lmtrain

    root, config = trained
    texts = _texts(23) + [" ".join(WORDS * 40)]  # the last is longer than one scoring chunk (1,024 tokens)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    r = cli("eval", config, "--per-line", tmp_path / "in.txt", "--batch-size", 4, "-q")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["line"] for row in rows] == list(range(1, len(texts) + 1))
    lm = lmtrain.load(root / "run")
    for text, row in zip(texts, rows):
        e = lm.evaluate(text)
        assert row["tokens"] == e.tokens
        assert row["log_prob"] == pytest.approx(-e.loss * e.tokens, rel=1e-4, abs=1e-4)
        assert row["perplexity"] == pytest.approx(e.perplexity, rel=1e-4)
        assert row["bits_per_byte"] == pytest.approx(e.bits_per_byte, rel=1e-4)
    assert rows[-1]["tokens"] > 1024


def test_json_lines_records_keep_their_ids_and_out_is_written_whole(trained, tmp_path):
    import lmtrain

    root, config = trained
    texts = _texts(10, seed=1)
    records = [{"text": t + "\nthe king", "key": f"k{i}"} for i, t in enumerate(texts)]
    data = "".join(json.dumps(x) + "\n" + ("\n" if i == 4 else "") for i, x in enumerate(records)).encode()
    src = tmp_path / "in.jsonl.zst"
    src.write_bytes(zstandard.ZstdCompressor().compress(data))
    r = cli("eval", config, "--per-line", src, "--id-field", "key", "--out", tmp_path / "o.jsonl", "-q")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [x["key"] for x in records]
    assert [row["line"] for row in rows] == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]  # line 6 is blank: no record
    lm = lmtrain.load(root / "run")
    assert rows[3]["perplexity"] == pytest.approx(lm.perplexity(records[3]["text"]), rel=1e-4)
    assert "scored 10 lines" in r.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize("content, args, fragments", [
    (b'{"text": "the king"}\n{"txt": "x"}\n', [], ["in.jsonl, line 2", "no 'text' field"]),
    (b'{"text": "the king", "id": 1}\n{"text": "x"}\n', ["--id-field", "id"], ["line 2", "no 'id' field",
                                                                              "--id-field"]),
    (b"the king\n", ["--id-field", "id"], ["--id-field", "plain text"]),
])
def test_bad_input_writes_nothing(trained, tmp_path, content, args, fragments):
    _, config = trained
    name = "in.txt" if content.startswith(b"the") else "in.jsonl"
    (tmp_path / name).write_bytes(content)
    (tmp_path / "o.jsonl").write_text("kept\n")
    r = cli("eval", config, "--per-line", tmp_path / name, "--out", tmp_path / "o.jsonl", *args, "-q")
    assert_clean_error(r, 2, *fragments)
    assert (tmp_path / "o.jsonl").read_text() == "kept\n"
    r = cli("eval", config, "--per-line", tmp_path / name, *args, "-q")
    assert_clean_error(r, 2, *fragments)
    assert "{" not in r.stdout


def test_ctrl_c_keeps_the_lines_scored_each_whole(trained, tmp_path, monkeypatch):
    from lmtrain.scoring import BatchScorer

    _, config = trained
    (tmp_path / "in.txt").write_text("\n".join(_texts(40, seed=2)) + "\n")
    calls = []
    real = BatchScorer.log_probs

    def interrupted_after_two(self, texts):
        calls.append(len(texts))
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: the handler asks the loop to stop
        return real(self, texts)

    monkeypatch.setattr(BatchScorer, "log_probs", interrupted_after_two)
    r = cli("eval", config, "--per-line", tmp_path / "in.txt", "--out", tmp_path / "o.jsonl", "--batch-size", 4, "-q")
    assert r.exit_code == 130, r.output
    assert "interrupted: scored" in r.output and "each complete" in r.output
    text = (tmp_path / "o.jsonl").read_text()
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    # batches are sorted by length, so what is kept is the lines before the first unscored one
    assert 0 <= len(rows) < 40 and [row["line"] for row in rows] == list(range(1, len(rows) + 1))
    assert len(calls) == 2


def test_a_reader_that_stops_early_ends_it_quietly(trained, tmp_path):
    import subprocess
    import sys

    _, config = trained
    (tmp_path / "in.txt").write_text("\n".join(_texts(4000, seed=3)) + "\n")  # far more than a pipe holds
    proc = subprocess.Popen([sys.executable, "-m", "lmtrain.cli", "eval", str(config), "--per-line",
                             str(tmp_path / "in.txt"), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(proc.stdout.readline())["line"] == 1  # as `| head -1`
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"error" not in err and b"Traceback" not in err
