"""`lmtrain eval --text`: a text from a file or from stdin, read as one document, and a missing file."""

from __future__ import annotations

import json
import math

import pytest
from helpers import cli

# Every test here prepares, fits or runs a benchmark.
pytestmark = pytest.mark.slow

TEXT = "the king and the queen\nsweet night come\n"


def test_eval_text_from_a_file_and_from_stdin(trained, tmp_path):
    lm, cfg = trained["lm"], trained["config"]
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    r = cli("eval", str(cfg), "--text", str(path), "--json")
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.output.strip().splitlines()[-1])
    assert metrics["split"] == "text" and metrics["step"] == 12 and metrics["seconds"] > 0  # the scoring is timed
    assert metrics["tokens"] == len(lm.tokenizer.encode_document(TEXT))
    assert metrics["perplexity"] == pytest.approx(lm.perplexity(TEXT), rel=1e-9)
    assert metrics["bits_per_byte"] == pytest.approx(
        -sum(s.log_prob for s in lm.score(TEXT)) / math.log(2) / len(TEXT.encode()), rel=1e-9)

    piped = cli("eval", str(cfg), "--text", "-", "--json", input=TEXT)
    assert piped.exit_code == 0, piped.output
    from_stdin = json.loads(piped.output.strip().splitlines()[-1])
    def timeless(d):
        return {k: v for k, v in d.items() if k != "seconds"}

    assert timeless(from_stdin) == timeless(metrics)

    missing = cli("eval", str(cfg), "--text", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 1 and "error: --text:" in missing.output and "nope.txt" in missing.output
    assert "Traceback" not in missing.output
