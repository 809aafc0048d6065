"""Progress away from a terminal: whole lines at most every few seconds, never carriage returns."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from helpers import tiny_sections, write_config

from lmtrain.progress import LogLines, progress_bar


@pytest.mark.slow
def test_log_lines_are_whole_and_spaced_in_time():
    out = io.StringIO()
    with LogLines(total=10, desc="fit", unit="step", every=0.0, file=out) as bar:
        for _ in range(10):
            bar.set_postfix({"loss": "4.200"})
            bar.update(1)
        bar.write("step 10: a message")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("fit: 1/10 step (10%)") and "loss=4.200" in lines[0] and "ETA" in lines[0]
    assert lines[-2].startswith("fit: 10/10 step (100%)") and lines[-1] == "step 10: a message"
    assert len(lines) == 11  # one a step (every=0), none again at close, and the message

    quiet = io.StringIO()
    with LogLines(total=1000, desc="fit", unit="step", every=3600.0, file=quiet) as bar:
        for _ in range(1000):
            bar.update(1)
    assert quiet.getvalue().count("\n") == 1 and quiet.getvalue().startswith("fit: 1,000/1,000 step")

    hidden = io.StringIO()  # a bar that is not left once done, and never printed, prints nothing
    with LogLines(total=5, desc="valid", every=3600.0, leave=False, file=hidden) as bar:
        bar.update(5)
    assert hidden.getvalue() == ""


def test_a_terminal_gets_tqdm_and_anything_else_log_lines(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert type(progress_bar(total=3, desc="x")).__name__ == "tqdm"
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress_bar(total=3, desc="x"), LogLines)


@pytest.mark.slow
def test_a_fit_logged_to_a_file_writes_few_progress_lines(tmp_path, corpus):
    sections = tiny_sections(tmp_path, corpus, train={"max_steps": 1000, "epochs": 100, "eval_every": 250,
                                                      "checkpoint_every": 500, "log_every": 50})
    config = write_config(tmp_path / "c.yaml", sections)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    lmtrain = [sys.executable, "-m", "lmtrain.cli"]
    for verb in ("prepare", "fit"):
        with open(tmp_path / f"{verb}.log", "w") as log:
            done = subprocess.run([*lmtrain, verb, str(config)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=600)
        assert done.returncode == 0, (tmp_path / f"{verb}.log").read_text()
    text = (tmp_path / "fit.log").read_text()
    assert "\r" not in text
    progress = [line for line in text.splitlines() if line.startswith(("fit: ", "valid"))]
    assert 1 <= len(progress) < 200, text
    assert progress[-1].startswith("fit: 1,000/1,000 step (100%)")
    assert "trained" in text.splitlines()[-1]
