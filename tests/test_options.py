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


def test_tied_weights_share_one_variable_and_project_when_widths_differ(tmp_path, corpus):
    import numpy as np
    import tensorflow as tf

    import lmtrain
    from lmtrain.checkpoints import CheckpointStore

    cfg = write_config(tmp_path / "c.yaml", tiny_sections(
        tmp_path, corpus, model={"tie_weights": True, "embedding_dim": 16, "hidden_dim": 24}))
    for verb in ("prepare", "fit"):
        r = _cli(verb, cfg, "-q")
        assert r.exit_code == 0, r.output
    lm = lmtrain.load(tmp_path / "run")
    model = lm.model
    assert model.softmax_w is model.embedding.embeddings  # one variable, two uses
    paths = [v.path for v in model.weights]
    assert "lstm_lm/softmax_w" not in paths and len(paths) == len(set(paths))
    assert model.projection.kernel.shape == (24, 16)  # LSTM output projected to the embedding width
    stored = {name for name, _ in tf.train.list_variables(CheckpointStore(tmp_path / "run" / "checkpoints", 1).latest())}
    assert not any("softmax_w" in name for name in stored)
    assert any("projection" in name for name in stored)
    assert np.isfinite(lm.perplexity("the king\n")) and _cli("eval", cfg).exit_code == 0
    assert _cli("generate", cfg, "--max-tokens", "5").exit_code == 0
    assert _cli("export", cfg, "--out", tmp_path / "export").exit_code == 0


def test_projection_without_tying_and_bad_combination(tmp_path, corpus):
    from lmtrain.config import config_from_dict
    from lmtrain.errors import ConfigError
    from lmtrain.model import create_model

    cfg = config_from_dict(tiny_sections(tmp_path, corpus, model={"projection_dim": 10}))
    model = create_model(cfg, 34, [1] * 34)
    assert model.softmax_w.shape == (34, 10) and model.projection.kernel.shape == (24, 10)
    with pytest.raises(ConfigError, match="model.projection_dim: must equal model.embedding_dim"):
        config_from_dict(tiny_sections(tmp_path, corpus, model={"tie_weights": True, "projection_dim": 10}))
