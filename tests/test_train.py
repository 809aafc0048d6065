"""The fit loop: it learns, it resumes where it stopped, and its variants (schedules, precisions) train."""

from pathlib import Path

import numpy as np
import pytest
from helpers import load_tiny_config

from lmtrain.data.prepare import prepare
from lmtrain.fit.loop import fit
from lmtrain.use.load import load_run

# Every test here prepares, fits or runs a benchmark.
pytestmark = pytest.mark.slow


def _config(tmp_path, corpus, **changes):
    return load_tiny_config(tmp_path, corpus, **changes)


def _repetitive_corpus(root):
    """Every document is one fixed sentence over and over: the next token is always determined
    by the previous ones, so the exact perplexity floor is 1 (a uniform guess scores 12)."""
    root.mkdir()
    line = "the king sword crown night day love death"
    for i in range(5):
        (root / f"{i}.txt").write_text((line + "\n") * 60)
    return root


def _repetitive_config(tmp_path, **train):
    """A model small enough to learn the repetitive corpus in a few dozen steps."""
    return _config(tmp_path, _repetitive_corpus(tmp_path / "corpus"), tokenizer={"vocab_size": 12},
                   model={"embedding_dim": 16, "hidden_dim": 32, "num_sampled": 4},
                   train={"epochs": 50, "batch_size": 8, "seq_len": 10, "learning_rate": 0.02,
                          "checkpoint_every": 1000, **train})


def test_repetitive_corpus_drives_perplexity_to_its_floor(tmp_path):
    cfg = _repetitive_config(tmp_path, max_steps=150)
    prepare(cfg, progress=False)
    result = fit(cfg, progress=False, echo=lambda _: None)
    assert result.step == 150
    assert result.valid_perplexity < 1.3, result.valid_perplexity  # vs 12 for a uniform guess


# With every regulariser on, the masks must be drawn again as an uninterrupted run draws them.
REGULARISED = {"dropout": 0.3, "locked_dropout": True, "weight_drop": 0.5, "word_dropout": 0.2, "ar": 2.0, "tar": 1.0}


@pytest.mark.parametrize("model", [{}, REGULARISED, {**REGULARISED, "num_layers": 2, "proj_size": 8}],
                         ids=["default", "regularised", "projected"])
def test_stopped_and_restarted_run_matches_an_uninterrupted_one(tmp_path, corpus, model):
    # Stopped by a lower max_steps, so with a constant rate (warmup_cosine's decay spans max_steps).
    straight = _config(tmp_path / "a", corpus, model=model,
                       train={"max_steps": 10, "checkpoint_every": 100, "schedule": "constant"})
    prepare(straight, progress=False)
    fit(straight, progress=False, echo=lambda _: None)

    data_dir = straight.data.dir
    first = _config(tmp_path / "b", corpus, model=model, data={"dir": data_dir},
                    train={"max_steps": 4, "checkpoint_every": 100, "schedule": "constant"})
    fit(first, progress=False, echo=lambda _: None)
    messages = []
    second = _config(tmp_path / "b", corpus, model=model, data={"dir": data_dir},
                     train={"max_steps": 10, "checkpoint_every": 100, "schedule": "constant"})
    fit(second, progress=False, echo=messages.append)
    assert any("resuming" in m and "step 4" in m for m in messages)

    a, b = load_run(Path(straight.train.run_dir)), load_run(Path(second.train.run_dir))
    for va, vb in zip(a.model.weights, b.model.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)  # bit for bit on CPU


@pytest.mark.parametrize("train", [{"precision": "mixed_bfloat16"}, {"precision": "mixed_float16"},
                                   {"jit_compile": True}, {"optimizer": "adam"}])
def test_fit_variants_train(tmp_path, train):
    cfg = _repetitive_config(tmp_path, max_steps=60, **train)
    prepare(cfg, progress=False)
    result = fit(cfg, progress=False, echo=lambda _: None)
    assert result.step == 60
    assert result.valid_perplexity < 3, result.valid_perplexity  # a uniform guess scores 12
    if "precision" in train:
        run = load_run(Path(cfg.train.run_dir))
        assert run.model.embedding.compute_dtype == train["precision"].removeprefix("mixed_")
        assert run.model.softmax_w.dtype == "float32"




def test_averaged_weights_resume_exactly_and_are_what_eval_scores(tmp_path, corpus, monkeypatch, capsys):
    """train.average: from the first validation that does not improve, validation scores the mean
    of the weights; the checkpoint holds it (a resumed run averages on exactly), and load_run
    (eval, generate, export) uses it, not the trained weights."""
    import tensorflow as tf

    from lmtrain.checkpoints import CheckpointStore
    from lmtrain.fit.loopstate import ValidationRecord, Verdict
    from lmtrain.use.evaluate import evaluate

    record = ValidationRecord.record

    def no_gain_at_step_4(self, step, ppl):  # the trigger, made certain on a tiny run
        verdict = record(self, step, ppl)
        return Verdict(improved=False, lower_rate=False, stop=False) if step == 4 else verdict

    monkeypatch.setattr(ValidationRecord, "record", no_gain_at_step_4)
    train = {"checkpoint_every": 100, "schedule": "constant", "average": True, "eval_every": 2}
    straight = _config(tmp_path / "a", corpus, train={**train, "max_steps": 10})
    prepare(straight, progress=False)
    result = fit(straight, progress=False, echo=print)
    lines = capsys.readouterr()
    lines = (lines.out + lines.err).splitlines()
    data_dir = straight.data.dir
    fit(_config(tmp_path / "b", corpus, data={"dir": data_dir}, train={**train, "max_steps": 4}),
        progress=False, echo=lambda _: None)
    resumed = _config(tmp_path / "b", corpus, data={"dir": data_dir}, train={**train, "max_steps": 10})
    fit(resumed, progress=False, echo=lambda _: None)

    assert any("step 4: valid perplexity" in m and "averaging the weights from here" in m for m in lines)
    assert any("step 6: valid perplexity" in m and "averaged weights" in m for m in lines)
    a, b = load_run(Path(straight.train.run_dir)), load_run(Path(resumed.train.run_dir))
    for va, vb in zip(a.model.weights, b.model.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)
    # What was loaded is the mean, not the trained weights the checkpoint also holds.
    path = CheckpointStore(Path(straight.train.run_dir) / "checkpoints", keep=3).latest()
    mean = tf.train.load_variable(path, "average/mean_0/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(a.model.trainable_variables[0].numpy(), mean)
    assert int(tf.train.load_variable(path, "average/count/.ATTRIBUTES/VARIABLE_VALUE")) == 6  # steps 5-10
    # ...and eval scores exactly what the last validation scored.
    assert evaluate(straight, split="valid", progress=False).perplexity == pytest.approx(result.valid_perplexity,
                                                                                      rel=1e-5)
