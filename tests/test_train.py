"""The fit loop: it learns, its checkpoints hold every weight, and it resumes where it stopped."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from lmtrain.checkpoints import CheckpointStore
from lmtrain.config import for_run, load_config
from lmtrain.errors import LmtrainError
from lmtrain.prepare import prepare
from lmtrain.rundir import load_run, weight_key
from lmtrain.train import fit

from conftest import tiny_sections, write_config


def _config(tmp_path, corpus, **changes):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_config(write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, **changes)))


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


def test_checkpoint_holds_every_weight(tmp_path, corpus):
    # Keras Adam: restored weights are the stored ones (LazyAdam would add its pending steps).
    cfg = _config(tmp_path, corpus, model={"num_layers": 2}, train={"optimizer": "adam"})
    prepare(cfg, progress=False)
    fit(cfg, progress=False, echo=lambda _: None)
    run = load_run(Path(cfg.train.run_dir))
    latest = CheckpointStore(Path(cfg.train.run_dir) / "checkpoints", keep=1).latest()
    assert run.step == 12 and latest.endswith("step-00000012/ckpt")
    names = {name for name, _ in tf.train.list_variables(latest)}
    for v in run.model.weights:  # both LSTM layers included
        key = weight_key(v)
        assert key in names, key
        np.testing.assert_array_equal(v.numpy(), tf.train.load_variable(latest, key))
    assert len(run.model.weights) == 3 + 3 * 2


def test_stopped_and_restarted_run_matches_an_uninterrupted_one(tmp_path, corpus):
    # Stopped by a lower max_steps, so with a constant rate (warmup_cosine's decay spans max_steps).
    straight = _config(tmp_path / "a", corpus, train={"max_steps": 10, "checkpoint_every": 100, "schedule": "constant"})
    prepare(straight, progress=False)
    fit(straight, progress=False, echo=lambda _: None)

    data_dir = straight.data.dir
    first = _config(tmp_path / "b", corpus, data={"dir": data_dir}, train={"max_steps": 4, "checkpoint_every": 100,
                                                                           "schedule": "constant"})
    fit(first, progress=False, echo=lambda _: None)
    messages = []
    second = _config(tmp_path / "b", corpus, data={"dir": data_dir}, train={"max_steps": 10, "checkpoint_every": 100,
                                                                            "schedule": "constant"})
    fit(second, progress=False, echo=messages.append)
    assert any("resuming" in m and "step 4" in m for m in messages)

    a, b = load_run(Path(straight.train.run_dir)), load_run(Path(second.train.run_dir))
    for va, vb in zip(a.model.weights, b.model.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)  # bit for bit on CPU


def test_checkpoint_of_another_shape_is_named(tmp_path, corpus):
    cfg = _config(tmp_path, corpus)
    prepare(cfg, progress=False)
    fit(cfg, progress=False, echo=lambda _: None)
    # the run directory's config now describes a wider LSTM than its checkpoint holds
    other = _config(tmp_path, corpus, model={"hidden_dim": 20})
    (Path(cfg.train.run_dir) / "config.yaml").write_text(yaml.safe_dump(other.to_dict()))
    # (a tiny run is short, so untied: the output matrix is the first weight whose shape differs)
    with pytest.raises(LmtrainError, match=r"weight lstm_lm/softmax_w has shape \[34, 24\] but the "
                                           r"config .* gives \[34, 20\]"):
        load_run(Path(cfg.train.run_dir))


@pytest.mark.parametrize("train", [{"precision": "mixed_bfloat16"}, {"precision": "mixed_float16"}, {"jit_compile": True},
                                   {"optimizer": "adam"}])
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


@pytest.mark.parametrize("train", [{}, {"schedule": "warmup_cosine", "warmup_steps": 3},
                                   {"precision": "mixed_float16"}], ids=["constant", "schedule", "loss_scaled"])
def test_inference_load_applies_pending_steps_from_slots_read_in_blocks(tmp_path, corpus, monkeypatch, train):
    from lmtrain import rundir
    from lmtrain.meta import load_meta
    from lmtrain.model import create_model
    from lmtrain.optim import apply_pending, create_optimizer

    cfg = _config(tmp_path, corpus, train=train)
    prepare(cfg, progress=False)
    fit(cfg, progress=False, echo=lambda _: None)
    run_dir = Path(cfg.train.run_dir)
    # The reference: the whole optimizer built and restored, then its pending steps applied.
    meta = load_meta(run_dir / "meta.json")
    total_steps = rundir.step_counts(cfg, meta)[1]
    cfg = for_run(cfg, total_steps)  # the model and schedule fit chose for this run's length
    model = create_model(cfg, meta.vocab_size, meta.unigram_counts)
    optimizer = create_optimizer(cfg.train, total_steps, cfg.model.hidden_dim)
    optimizer.build(model.trainable_variables)
    latest = CheckpointStore(run_dir / "checkpoints", keep=3).latest()
    tf.train.Checkpoint(model=rundir._weights(model), optimizer=optimizer).read(latest).expect_partial()
    apply_pending(optimizer, model.trainable_variables)

    monkeypatch.setattr(rundir, "PENDING_BLOCK_ROWS", 7)  # several blocks, a ragged last one
    loaded = load_run(run_dir)
    for expected, got in zip(model.trainable_variables, loaded.model.trainable_variables):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7, err_msg=got.path)
    moved = [v.path for v, w in zip(model.trainable_variables, loaded.model.trainable_variables)
             if not np.array_equal(tf.train.load_variable(latest, weight_key(w)), w.numpy())]
    assert any("embeddings" in p for p in moved)  # there were pending steps to apply (tied: the output rows)
