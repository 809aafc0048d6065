"""lmtrain.rundir: a checkpoint holds every weight, a checkpoint of another shape is named, and an
inference load applies LazyAdam's pending steps from slots read in blocks."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from helpers import load_tiny_config as _config

from lmtrain.checkpoints import CheckpointStore
from lmtrain.config.resolve import resolve
from lmtrain.config.rules import REGULARISATION_KEYS
from lmtrain.config.schema import Config
from lmtrain.data.prepare import prepare
from lmtrain.errors import LmtrainError
from lmtrain.fit.loop import fit
from lmtrain.rundir import weight_key
from lmtrain.use.load import load_run

# Every test here prepares, fits or runs a benchmark.
pytestmark = pytest.mark.slow


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


@pytest.mark.parametrize("train", [{}, {"schedule": "warmup_cosine", "warmup_steps": 3},
                                   {"precision": "mixed_float16"}], ids=["constant", "schedule", "loss_scaled"])
def test_inference_load_applies_pending_steps_from_slots_read_in_blocks(tmp_path, corpus, monkeypatch, train):
    from lmtrain import rundir
    from lmtrain.build import create_model, create_optimizer, step_counts
    from lmtrain.data.meta import load_meta
    from lmtrain.keras.optim import apply_pending
    from lmtrain.use import load as trained

    cfg = _config(tmp_path, corpus, train=train)
    prepare(cfg, progress=False)
    fit(cfg, progress=False, echo=lambda _: None)
    run_dir = Path(cfg.train.run_dir)
    # The reference: the whole optimizer built and restored, then its pending steps applied.
    meta = load_meta(run_dir / "meta.json")
    total_steps = step_counts(cfg, meta)[1]
    cfg = resolve(cfg, total_steps)  # the model and schedule fit chose for this run's length
    model = create_model(cfg, meta.vocab_size, meta.unigram_counts)
    optimizer = create_optimizer(cfg.train, total_steps, cfg.model.hidden_dim)
    optimizer.build(model.trainable_variables)
    latest = CheckpointStore(run_dir / "checkpoints", keep=3).latest()
    tf.train.Checkpoint(model=rundir.weights_checkpoint(model), optimizer=optimizer).read(latest).expect_partial()
    apply_pending(optimizer, model.trainable_variables)

    monkeypatch.setattr(trained, "BLOCK_ROWS", 7)  # several blocks, a ragged last one
    loaded = load_run(run_dir)
    for expected, got in zip(model.trainable_variables, loaded.model.trainable_variables):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7, err_msg=got.path)
    moved = [v.path for v, w in zip(model.trainable_variables, loaded.model.trainable_variables)
             if not np.array_equal(tf.train.load_variable(latest, weight_key(w)), w.numpy())]
    assert any("embeddings" in p for p in moved)  # there were pending steps to apply (tied: the output rows)


# The keys a run decides where its config leaves them null or auto, and what a version before
# they were resolved wrote for each.
DECIDED = {"model": {"tie_weights": None, "embedding_dropout": None, "dropout": None, "locked_dropout": None,
                     "weight_drop": None, "word_dropout": None, "ar": None, "tar": None, "softmax": "auto",
                     "num_sampled": None, "lstm_impl": "auto"},
           "train": {"schedule": None, "warmup_steps": None, "learning_rate": None, "jit_compile": "auto"}}


def test_a_run_directory_says_what_it_used(tmp_path, corpus):
    cfg = _config(tmp_path, corpus, **DECIDED)
    prepare(cfg, progress=False)
    fit(cfg, progress=False, echo=lambda _: None)
    saved = yaml.safe_load((Path(cfg.train.run_dir) / "config.yaml").read_text())
    # 1,024 negatives (num_sampled null) are more than the 34 ids: the full softmax, which draws none
    assert saved["model"]["softmax"] == "full" and saved["model"]["num_sampled"] is None
    left = [f"{s}.{k}" for s, keys in DECIDED.items() for k in keys
            if saved[s][k] in (None, "auto") and k != "num_sampled"]
    assert not left, left
    assert saved["train"]["learning_rate"] == 0.02 and saved["train"]["jit_compile"] is False
    # where it samples, the number of negatives is written too
    assert resolve(Config(), 1000, vocab_size=100_000).model.num_sampled == 2048


def test_a_run_directory_from_before_its_keys_were_resolved_evaluates_and_resumes_as_it_did(tmp_path, corpus):
    """A run directory whose config.yaml keeps the nulls and autos an earlier version saved: it
    loads, evaluates, and resumes to the same bits as a run never stopped."""
    from lmtrain.use.evaluate import evaluate

    changes = {"model": {**DECIDED["model"], "num_layers": 2},
               "train": {**DECIDED["train"], "schedule": "warmup_cosine"}}  # the defaults, as a user leaves them
    whole = _config(tmp_path / "whole", corpus, **changes)
    prepare(whole, progress=False)
    fit(whole, progress=False, echo=lambda _: None)
    part = _config(tmp_path / "part", corpus, **changes)
    prepare(part, progress=False)
    fit(part, progress=False, echo=lambda _: None)
    for step in (10, 12):  # back to the checkpoint of step 5, as if stopped there
        shutil.rmtree(Path(part.train.run_dir) / "checkpoints" / f"step-{step:08d}")
    saved = Path(part.train.run_dir) / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    for section, keys in DECIDED.items():
        for key, value in keys.items():
            if key not in ("tie_weights", "schedule", *REGULARISATION_KEYS):  # resolved before too
                old[section][key] = value
    saved.write_text(yaml.safe_dump(old))
    before = evaluate(part, split="valid", progress=False).perplexity
    assert np.isfinite(before)
    fit(part, progress=False, echo=lambda _: None)  # resumes from step 5 to 12, the nulls kept null
    stopped, never = (load_run(Path(c.train.run_dir)).model.weights for c in (part, whole))
    for a, b in zip(stopped, never):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert yaml.safe_load(saved.read_text())["train"]["warmup_steps"] is None  # as that version trained it


def test_checkpoint_tensors_read_a_block_of_rows_at_a_time_with_the_checksum_checked(tmp_path):
    """lmtrain.bundle reads what TensorFlow wrote, row blocks at a time, and a flipped byte in a
    tensor is named as damage (TensorFlow's own slice reader reads the whole tensor per slice)."""
    from lmtrain.bundle import stored_tensors

    rng = np.random.default_rng(0)
    values = {"w": rng.normal(size=(1000, 7)).astype(np.float32), "b": rng.normal(size=(1000,)),
              "n": np.array(5, np.int64), "flag": np.array(True)}
    prefix = tf.train.Checkpoint(**{k: tf.Variable(v) for k, v in values.items()}).write(str(tmp_path / "ckpt"))
    tensors = stored_tensors(prefix)
    for name, want in values.items():
        stored = tensors[f"{name}/.ATTRIBUTES/VARIABLE_VALUE"]
        np.testing.assert_array_equal(stored.read(), want)
        blocks = list(stored.blocks(300)) if want.ndim else []
        if blocks:
            assert [lo for lo, _ in blocks] == [0, 300, 600, 900] and len(blocks[-1][1]) == 100
            np.testing.assert_array_equal(np.concatenate([rows for _, rows in blocks]), want)
    w = tensors["w/.ATTRIBUTES/VARIABLE_VALUE"]
    data = bytearray(w.path.read_bytes())
    data[w.offset + 5000] ^= 0xFF
    w.path.write_bytes(bytes(data))
    with pytest.raises(LmtrainError, match=r"w/.ATTRIBUTES/VARIABLE_VALUE is damaged \(its checksum does not match\)"):
        for _ in w.blocks(300):
            pass


def test_a_run_resumes_with_another_lstm_implementation(tmp_path, corpus):
    """lstm_impl is the one decided key a resumed run does not keep: a run started with the fused
    kernel (a CPU's auto) resumes with Keras' loop (a GPU's auto), to the same function."""
    cfg = _config(tmp_path, corpus, model={"lstm_impl": "fused"}, train={"max_steps": 6})
    prepare(cfg, progress=False)
    fit(cfg, progress=False, echo=lambda _: None)
    messages = []
    fit(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, lstm_impl="keras"),
                            train=dataclasses.replace(cfg.train, max_steps=8)), progress=False, echo=messages.append)
    assert any("resuming from" in m for m in messages)
    assert yaml.safe_load((Path(cfg.train.run_dir) / "config.yaml").read_text())["model"]["lstm_impl"] == "keras"
