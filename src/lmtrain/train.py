"""`lmtrain fit`: the training loop, checkpoints, logs and progress; and loading a trained run.

The loop is ours rather than `Model.fit` because it must own the data iterator: the checkpoint
holds the model, the optimizer slots and step, and the tf.data iterator position, so a run that
is stopped and started again continues where it was. The per-step work is `model.train_step`
(the Keras custom-step contract), compiled once with `tf.function`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf
import yaml
from tqdm import tqdm

from lmtrain.config import Config, config_from_dict, save_config
from lmtrain.errors import LmtrainError
from lmtrain.model import LanguageModel, create_model
from lmtrain.optim import apply_pending, create_optimizer, pending_applied
from lmtrain.paths import DataPaths, RunPaths
from lmtrain.prepare import load_meta
from lmtrain.records import eval_dataset, num_windows, train_dataset
from lmtrain.tokenizer import Tokenizer

Echo = Callable[[str], None]


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    step: int
    train_loss: float | None  # sampled (or full) training loss over the last logging interval
    valid_perplexity: float | None  # full-softmax perplexity on the validation split
    tokens_per_sec: float | None
    data_wait_share: float | None  # share of step time spent waiting for the input pipeline
    wall_seconds: float


@dataclass
class TrainedRun:
    """Everything `eval` and `generate` need, rebuilt from the run directory alone."""

    config: Config
    meta: dict[str, Any]
    tokenizer: Tokenizer
    model: LanguageModel
    step: int


def fit(config: Config, force: bool = False, progress: bool = True, echo: Echo = print) -> FitResult:
    """Train (or continue training) the model a config describes; return the final figures."""
    started = time.perf_counter()
    data = DataPaths(Path(config.data.dir))
    meta = load_meta(data)
    if meta.get("fingerprint") != config.data_fingerprint():
        raise LmtrainError(
            f"data.dir: {data.root} was prepared from a different data/tokenizer config; run `lmtrain prepare` first"
        )
    run = RunPaths(Path(config.train.run_dir))
    _init_run_dir(run, data, config, force)

    t = config.train
    model, optimizer, train_fn = build_trainer(config, meta["vocab_size"], meta["unigram_counts"])

    steps_per_epoch = num_windows(meta["splits"]["train"]["tokens"], t.seq_len) // t.batch_size
    if steps_per_epoch < 1:
        raise LmtrainError(
            f"train.batch_size: the training split ({meta['splits']['train']['tokens']} tokens) is smaller than "
            f"one batch of {t.batch_size} x {t.seq_len}; lower train.batch_size or train.seq_len"
        )
    total_steps = steps_per_epoch * t.epochs
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)

    iterator = iter(train_dataset(data.shards("train"), t.seq_len, t.batch_size, t.epochs, t.shuffle_buffer, t.seed))
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)  # readable without the optimizer
    checkpoint = tf.train.Checkpoint(model=_weights(model), optimizer=optimizer, data=iterator, step=step_var)
    manager = tf.train.CheckpointManager(checkpoint, str(run.checkpoints), max_to_keep=t.keep_checkpoints)
    if manager.latest_checkpoint:
        _restore(checkpoint, manager.latest_checkpoint, model)
        echo(f"resuming from {manager.latest_checkpoint} (step {int(optimizer.iterations)})")
    step = int(optimizer.iterations)

    valid_files = data.shards("valid") if meta["splits"]["valid"]["tokens"] > 1 else []
    writer = tf.summary.create_file_writer(str(run.logs))
    bar = tqdm(total=total_steps, initial=step, desc="fit", unit="step", disable=not progress, dynamic_ncols=True)

    train_loss = valid_ppl = tokens_per_sec = wait_share = None
    interval_tokens, interval_start, wait = 0.0, time.perf_counter(), 0.0
    loop_start_step = step
    while step < total_steps:
        # ---- input (timed: the pipeline must not starve the step)
        t0 = time.perf_counter()
        batch = next(iterator)
        wait += time.perf_counter() - t0
        # ---- forward / backward / update
        logs = train_fn(batch)
        step += 1
        interval_tokens += float(t.batch_size * t.seq_len)
        # ---- logging
        if step % t.log_every == 0 or step == total_steps:
            train_loss = float(logs["loss"])  # waits for the step; averaged over the interval
            model.loss_tracker.reset_state()
            elapsed = time.perf_counter() - interval_start
            tokens_per_sec = interval_tokens / max(elapsed, 1e-9)
            wait_share = wait / max(elapsed, 1e-9)
            with writer.as_default(step=step):
                tf.summary.scalar(f"train/{config.model.softmax}_loss", train_loss)
                tf.summary.scalar("train/tokens_per_sec", tokens_per_sec)
                tf.summary.scalar("train/data_wait_share", wait_share)
                tf.summary.scalar("train/learning_rate", float(optimizer.learning_rate))
            bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_sec:,.0f}", wait=f"{wait_share:.1%}")
            interval_tokens, interval_start, wait = 0.0, time.perf_counter(), 0.0
        bar.update(1)
        t_end = time.perf_counter()
        # ---- validation (full softmax) at each epoch end and at the very end
        if valid_files and (step % steps_per_epoch == 0 or step == total_steps):
            with pending_applied(optimizer, model.trainable_variables):
                nll, count = split_nll(model, valid_files, t.seq_len, t.batch_size)
            valid_ppl = math.exp(nll / count)
            with writer.as_default(step=step):
                tf.summary.scalar("valid/perplexity", valid_ppl)
            bar.write(f"step {step}: valid perplexity {valid_ppl:.2f} (full softmax, {int(count)} tokens)")
        # ---- checkpoint
        if step % t.checkpoint_every == 0 or step == total_steps:
            step_var.assign(step)
            manager.save(checkpoint_number=step)
        interval_start += time.perf_counter() - t_end  # validation and checkpoints are not throughput
    bar.close()
    writer.close()
    if step == loop_start_step:
        echo(f"already trained to step {step} in {run.root}; raise train.max_steps or train.epochs to continue")
    return FitResult(run.root, step, train_loss, valid_ppl, tokens_per_sec, wait_share, time.perf_counter() - started)


def build_trainer(config: Config, vocab_size: int, unigram_counts: list[int]
                  ) -> tuple[LanguageModel, keras.optimizers.Optimizer, Callable[..., Any]]:
    """The model, optimizer and compiled train step exactly as `fit` runs them.

    The benchmark times the step this returns, so what it measures is what users train with.
    """
    keras.utils.set_random_seed(config.train.seed)
    model = create_model(config, vocab_size, unigram_counts)
    optimizer = create_optimizer(config.train)
    model.compile(optimizer=optimizer)
    optimizer.build(model.trainable_variables)
    step_fn = tf.function(model.train_step, jit_compile=resolve_jit(config.train.jit_compile))
    return model, optimizer, step_fn


def resolve_jit(setting: str | bool) -> bool:
    """`train.jit_compile` as a bool. "auto" is off: on GPU, XLA would replace the cuDNN LSTM
    kernel (which cannot be compiled) with a slower loop, and on CPU it did not pay off here."""
    return setting is True


def split_nll(model: LanguageModel, files: list[Path], seq_len: int, batch_size: int,
              progress: bool = False) -> tuple[float, float]:
    """(total exact NLL in nats, number of predicted tokens) over a split, in float64."""
    fn = model.compiled_nll_sum()
    total = count = 0.0
    for tokens, targets, mask in tqdm(eval_dataset(files, seq_len, batch_size), desc="eval", unit="batch",
                                      disable=not progress, leave=False):
        s, c = fn(tokens, targets, mask)
        total += float(s)
        count += float(c)
    if count == 0:
        raise LmtrainError("the split to evaluate holds no tokens")
    return total, count


def load_run(run_dir: Path) -> TrainedRun:
    """Rebuild the trained model from a run directory (config, tokenizer, meta, checkpoint)."""
    run = RunPaths(run_dir)
    if not run.config.is_file():
        raise LmtrainError(f"no trained run in {run.root}: run `lmtrain fit` with this config first")
    config = config_from_dict(yaml.safe_load(run.config.read_text()))
    meta = json.loads(run.meta.read_text())
    latest = tf.train.latest_checkpoint(str(run.checkpoints))
    if latest is None:
        raise LmtrainError(f"no checkpoint in {run.checkpoints}: run `lmtrain fit` with this config first")
    model = create_model(config, meta["vocab_size"], meta["unigram_counts"])
    optimizer = create_optimizer(config.train)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    # Model, optimizer state and step; not the data position. The optimizer is needed once: to
    # give lazily updated rows the momentum steps they still owe (see optim.LazyAdam).
    checkpoint = tf.train.Checkpoint(model=_weights(model), optimizer=optimizer, step=step)
    _restore(checkpoint, latest, model, partial=True)
    apply_pending(optimizer, model.trainable_variables)
    return TrainedRun(config, meta, Tokenizer(run.tokenizer), model, int(step.numpy()))


def _init_run_dir(run: RunPaths, data: DataPaths, config: Config, force: bool) -> None:
    """Create the run directory, or check that an existing one was made by a compatible config."""
    if run.config.is_file():
        old = yaml.safe_load(run.config.read_text()) or {}
        new = config.to_dict()
        changed = [s for s in ("data", "tokenizer", "model") if old.get(s) != new[s]]
        if changed and not force:
            raise LmtrainError(
                f"train.run_dir: {run.root} holds a run made with a different {'/'.join(changed)} config; "
                f"use --force to start it over, or choose another train.run_dir"
            )
        if force:
            shutil.rmtree(run.checkpoints, ignore_errors=True)
            shutil.rmtree(run.logs, ignore_errors=True)
    run.root.mkdir(parents=True, exist_ok=True)
    save_config(config, run.config)
    shutil.copyfile(data.tokenizer, run.tokenizer)
    shutil.copyfile(data.meta, run.meta)


def _weights(model: LanguageModel) -> tf.train.Checkpoint:
    """Every model weight under its Keras path, as a checkpoint node.

    Keras 3 keeps sub-layers held in Python lists (our LSTM stack) out of TensorFlow's object
    graph, so checkpointing the model object itself would silently skip the LSTM weights.
    """
    return tf.train.Checkpoint(**{_weight_name(v): v for v in model.weights})


def _weight_name(v: keras.Variable) -> str:
    return v.path.replace("/", ".")


def weight_key(v: keras.Variable) -> str:
    """Where a model weight is stored in our checkpoints (TensorFlow escapes "." as "..")."""
    return f"model/{_weight_name(v).replace('.', '..')}/.ATTRIBUTES/VARIABLE_VALUE"


def _restore(checkpoint: tf.train.Checkpoint, path: str, model: LanguageModel, partial: bool = False) -> None:
    """Restore a checkpoint, first checking that every model weight is there with its shape."""
    try:
        stored = dict(tf.train.list_variables(path))
    except (tf.errors.OpError, ValueError) as exc:
        raise LmtrainError(f"checkpoint {path} is unreadable ({type(exc).__name__}); remove it or fit with --force") from None
    for v in model.weights:
        key = weight_key(v)
        if key not in stored:
            raise LmtrainError(f"checkpoint {path} has no weight {v.path}: it was written for another model config")
        if list(stored[key]) != list(v.shape):
            raise LmtrainError(
                f"checkpoint {path}: weight {v.path} has shape {list(stored[key])} but the config "
                f"(model.* / tokenizer.vocab_size) gives {list(v.shape)}"
            )
    try:
        status = checkpoint.restore(path)
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise LmtrainError(f"checkpoint {path} does not match this run: {first}") from None
