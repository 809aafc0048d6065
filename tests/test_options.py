"""Model and training options: samplers, weight tying and projection, schedules, early stopping."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lmtrain.cli import app

from conftest import tiny_sections, write_config

runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("kind, vocab, warns", [("bpe", 60, True), ("char", 30, False)])
def test_log_uniform_warns_when_ids_are_not_sorted_by_frequency(tmp_path, corpus, kind, vocab, warns):
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(
        tmp_path, corpus, tokenizer={"model_type": kind, "vocab_size": vocab},
        model={"sampler": "log_uniform", "num_sampled": 8}, train={"max_steps": 2}))
    assert _cli("prepare", cfg, "-q").exit_code == 0
    r = _cli("fit", cfg, "-q")
    assert r.exit_code == 0, r.output
    assert ("warning: model.sampler=log_uniform assumes ids sorted by frequency" in r.output) == warns, r.output


def test_uniform_sampler_trains(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, model={"sampler": "uniform"}))
    assert _cli("prepare", cfg, "-q").exit_code == 0
    r = _cli("fit", cfg, "-q")
    assert r.exit_code == 0 and "warning" not in r.output, r.output
