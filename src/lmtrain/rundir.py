"""What a run directory holds and how it is read back: its config, tokenizer and meta, the two
checkpoint layouts, the TensorBoard scalars, and `load_run`.

A training checkpoint (`training_checkpoint`) holds everything an exact resume needs: the
weights, the dropout generators' states, the optimizer slots and step, the tf.data iterator, the
loop's counters and the validation record. An inference restore (`load_run`) reads the weights
and step from that same checkpoint, and of the optimizer only what LazyAdam's pending steps need,
one block of rows at a time, so `eval`, `generate`, `export` and `lmtrain.load` never hold the
optimizer slots in memory. Both are defined here, side by side, so they cannot drift apart.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
import yaml

from lmtrain.build import build_run
from lmtrain.checkpoints import CheckpointStore
from lmtrain.config import Config
from lmtrain.configfile import config_from_dict, save_config
from lmtrain.errors import LmtrainError, first_line
from lmtrain.keras.optim import LazyAdam, lazy_adam_of
from lmtrain.meta import DataMeta, load_meta
from lmtrain.model import LanguageModel
from lmtrain.paths import DataPaths, RunPaths, write_atomic
from lmtrain.tokenizer import Tokenizer

# Rows of an optimizer slot read at once when applying LazyAdam's pending steps for inference.
PENDING_BLOCK_ROWS = 16384


@dataclass
class TrainedRun:
    """Everything `eval` and `generate` need, rebuilt from the run directory alone."""

    config: Config
    meta: DataMeta
    tokenizer: Tokenizer
    model: LanguageModel
    step: int


def started_config(run: RunPaths) -> Config | None:
    """The config a run directory's run was started with (with today's defaults filled in), or
    None where there is none or this version cannot read it."""
    if not run.config.is_file():
        return None
    try:
        return config_from_dict(yaml.safe_load(run.config.read_text()) or {})
    except (LmtrainError, yaml.YAMLError):
        return None


def init_run_dir(run: RunPaths, data: DataPaths, config: Config, force: bool, started: Config | None = None
                 ) -> None:
    """Create the run directory, or check that an existing one was made by a compatible config.
    `started`: the directory's config as `started_config` read it (read here when None)."""
    if run.config.is_file() and not force:
        started = started or started_config(run)
        # A config this version cannot read is compared as written, so it differs.
        old = started.to_dict() if started is not None else (yaml.safe_load(run.config.read_text()) or {})
        new = config.to_dict()
        changed = [s for s in ("data", "tokenizer", "model") if old.get(s) != new[s]]
        if changed:
            raise LmtrainError(
                f"train.run_dir: {run.root} holds a run made with a different {'/'.join(changed)} config; "
                f"use --force to start it over, or choose another train.run_dir"
            )
    if force:  # start over: even checkpoints found without a config.yaml beside them
        shutil.rmtree(run.checkpoints, ignore_errors=True)
        shutil.rmtree(run.logs, ignore_errors=True)
    run.root.mkdir(parents=True, exist_ok=True)
    save_config(config, run.config)
    write_atomic(run.tokenizer, data.tokenizer.read_bytes())
    write_atomic(run.meta, data.meta.read_bytes())


# ---- the two checkpoint layouts ---------------------------------------------------------------

def training_checkpoint(model: LanguageModel, optimizer: keras.optimizers.Optimizer, **loop: Any
                        ) -> tf.train.Checkpoint:
    """What `fit` saves and resumes from: the weights, the dropout generators' states, the
    optimizer, and the loop's own state (`loop`: the data iterator, counters, validation)."""
    return tf.train.Checkpoint(model=_weights(model), rng=_rng_states(model), optimizer=optimizer, **loop)


def _inference_checkpoint(model: LanguageModel, optimizer: keras.optimizers.Optimizer, step: tf.Variable
                          ) -> tf.train.Checkpoint:
    """What `load_run` reads of a training checkpoint: weights, step, and an optimizer that is
    never built, so only its step counter and learning rate are restored (its slots are not)."""
    return tf.train.Checkpoint(model=_weights(model), optimizer=optimizer, step=step)


def load_run(run_dir: Path) -> TrainedRun:
    """Rebuild the trained model from a run directory (config, tokenizer, meta, checkpoint)."""
    run = RunPaths(run_dir)
    if not run.config.is_file():
        raise LmtrainError(f"no trained run in {run.root}: run `lmtrain fit` with this config first")
    config = config_from_dict(yaml.safe_load(run.config.read_text()))
    meta = load_meta(run.meta)
    # The best checkpoint when early stopping kept one (train.patience), else the latest.
    latest = (CheckpointStore(run.checkpoints / "best", keep=1).latest()
              or CheckpointStore(run.checkpoints, config.train.keep_checkpoints).latest())
    if latest is None:
        raise LmtrainError(f"no checkpoint in {run.checkpoints}: run `lmtrain fit` with this config first")
    config, model, optimizer = build_run(config, meta)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    restore(_inference_checkpoint(model, optimizer, step), latest, model, partial=True)
    lazy = lazy_adam_of(optimizer)
    if lazy is not None:
        prefix = "optimizer/" if lazy is optimizer else "optimizer/inner_optimizer/"
        _apply_pending_from(latest, prefix, lazy, model.trainable_variables)
    _apply_average_from(latest, model.trainable_variables)
    return TrainedRun(config, meta, Tokenizer(run.tokenizer), model, int(step.numpy()))


def _apply_pending_from(path: str, prefix: str, optimizer: LazyAdam, variables: list[Any]) -> None:
    """Give every row the momentum steps it skipped (see optim.LazyAdam), reading the optimizer
    slots from checkpoint `path` one block of rows at a time (never whole V x D slots)."""
    stored = dict(tf.train.list_variables(path))
    for index, variable in enumerate(variables):
        keys = [f"{prefix}_variables/{p}/.ATTRIBUTES/VARIABLE_VALUE"
                for p in optimizer.slot_positions(index, len(variables))]
        shape = list(variable.shape) if len(variable.shape) else [1]
        if any(k not in stored for k in keys) or stored[keys[0]] != list(variable.shape) or stored[keys[2]] != shape[:1]:
            raise LmtrainError(f"checkpoint {path}: its optimizer state does not match the model "
                               f"(no slots for {variable.path}); it was written for another config")
        rows = shape[0]
        weights = variable.numpy().reshape(shape)  # a copy, updated block by block, assigned once
        for lo in range(0, rows, PENDING_BLOCK_ROWS):
            n = min(PENDING_BLOCK_ROWS, rows - lo)
            m, v, last = (_read_rows(path, key, stored[key], lo, n, dtype)
                          for key, dtype in zip(keys, (variable.dtype, variable.dtype, "int64")))
            owed, _, _ = optimizer.owed(tf.reshape(m, [n] + shape[1:]), tf.reshape(v, [n] + shape[1:]), last)
            weights[lo:lo + n] -= owed.numpy()
        # One whole assign: a partial (slice) assign would switch the variable to copy-on-read,
        # and every full read of it in scoring would then copy it.
        variable.assign(weights.reshape(variable.shape))


def _apply_average_from(path: str, variables: list[Any]) -> None:
    """Where the run averaged its weights (`train.average`, lmtrain.averaging) and had begun to,
    put the mean in place of the trained weights: it is what validation scored."""
    stored = dict(tf.train.list_variables(path))
    key = "average/{}/.ATTRIBUTES/VARIABLE_VALUE"
    if key.format("active") not in stored or not bool(tf.train.load_variable(path, key.format("active"))):
        return
    if int(tf.train.load_variable(path, key.format("count"))) == 0:
        return
    for i, variable in enumerate(variables):
        name = key.format(f"mean_{i}")
        if stored.get(name) != list(variable.shape):
            raise LmtrainError(f"checkpoint {path}: its averaged weights do not match the model "
                               f"(no mean for {variable.path}); it was written for another config")
        variable.assign(tf.train.load_variable(path, name))


def _read_rows(path: str, key: str, shape: list[int], lo: int, n: int, dtype: Any) -> tf.Tensor:
    """Rows lo .. lo+n of a stored tensor of `shape`, read without reading the rest."""
    spec = " ".join(str(d) for d in shape) + " " + ":".join([f"{lo},{n}"] + ["-"] * (len(shape) - 1))
    (value,) = tf.raw_ops.RestoreV2(prefix=path, tensor_names=[key], shape_and_slices=[spec],
                                    dtypes=[tf.as_dtype(dtype)])
    return value


def restore(checkpoint: tf.train.Checkpoint, path: str, model: LanguageModel, partial: bool = False) -> None:
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
        status = checkpoint.read(path)  # the counterpart of CheckpointStore.save's write()
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as exc:
        raise LmtrainError(f"checkpoint {path} does not match this run: {first_line(exc)}") from None


def _weights(model: LanguageModel) -> tf.train.Checkpoint:
    """Every model weight under its Keras path, as a checkpoint node.

    Keras 3 keeps sub-layers held in Python lists (our LSTM stack) out of TensorFlow's object
    graph, so checkpointing the model object itself would silently skip the LSTM weights.
    """
    return tf.train.Checkpoint(**{_weight_name(v): v for v in model.weights})


def _rng_states(model: LanguageModel) -> tf.train.Checkpoint:
    """The states of the model's random generators (the dropout masks), as a checkpoint node.

    They are variables of the model but not among its weights, so `_weights` leaves them out;
    without them a resumed run would draw other dropout masks than an uninterrupted one. Keras
    names them by a process-wide counter (seed_generator_7), so they are stored by position.
    """
    weights = {id(v) for v in model.weights}
    states = [v for v in model.variables if id(v) not in weights]
    return tf.train.Checkpoint(**{f"state_{i}": v for i, v in enumerate(states)})


def _weight_name(v: keras.Variable) -> str:
    return v.path.replace("/", ".")


def weight_key(v: keras.Variable) -> str:
    """Where a model weight is stored in our checkpoints (TensorFlow escapes "." as "..")."""
    return f"model/{_weight_name(v).replace('.', '..')}/.ATTRIBUTES/VARIABLE_VALUE"


def logged_scalars(logs: Path, tag: str) -> list[tuple[float, int, float]]:
    """(wall-clock time, step, value) of one scalar `fit` logged to TensorBoard, by step."""
    points = []
    for path in sorted(Path(logs).glob("events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for value in event.summary.value:
                if value.tag == tag:
                    number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                    points.append((event.wall_time, int(event.step), number))
    return sorted(points, key=lambda p: p[1])
