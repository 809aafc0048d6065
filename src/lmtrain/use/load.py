"""A trained run read back for inference: `load_run` rebuilds the model `fit` trained from a run
directory alone (config, tokenizer, meta, checkpoint), for `eval`, `generate`, `export`,
`eval --per-line` and `lmtrain.load`.

It reads the weights and step from the training checkpoint (`lmtrain.rundir`'s layout), and of
the optimizer only what LazyAdam's pending steps need, one block of rows at a time, so inference
never holds the optimizer slots in memory; where the run averaged its weights, the mean is put
in place. Nothing here imports the trainer (`lmtrain.fit.loop`, `lmtrain.fit.distribute`) or `prepare`:
scoring and generating do not pay for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
import yaml

from lmtrain.build import rebuild
from lmtrain.checkpoints import CheckpointStore
from lmtrain.config.files import config_from_dict
from lmtrain.config.schema import Config
from lmtrain.data.meta import DataMeta, load_meta
from lmtrain.data.tokenizer import Tokenizer
from lmtrain.errors import LmtrainError
from lmtrain.keras.optim import LazyAdam, lazy_adam_of
from lmtrain.model import LanguageModel
from lmtrain.paths import RunPaths
from lmtrain.rundir import restore, weights_checkpoint

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


def _inference_checkpoint(model: LanguageModel, optimizer: keras.optimizers.Optimizer, step: tf.Variable
                          ) -> tf.train.Checkpoint:
    """What `load_run` reads of a training checkpoint: weights, step, and an optimizer that is
    never built, so only its step counter and learning rate are restored (its slots are not)."""
    return tf.train.Checkpoint(model=weights_checkpoint(model), optimizer=optimizer, step=step)


def load_run(run_dir: Path) -> TrainedRun:
    """Rebuild the trained model from a run directory (config, tokenizer, meta, checkpoint)."""
    run = RunPaths(run_dir)
    if not run.config.is_file():
        raise LmtrainError(f"no trained run in {run.root}: run `lmtrain fit` with this config first")
    config = config_from_dict(yaml.safe_load(run.config.read_text()))
    meta = load_meta(run.meta)
    # The best checkpoint when early stopping kept one (train.patience), else the latest.
    latest = (CheckpointStore(run.best_checkpoints, keep=1).latest()
              or CheckpointStore(run.checkpoints, config.train.keep_checkpoints).latest())
    if latest is None:
        raise LmtrainError(f"no checkpoint in {run.checkpoints}: run `lmtrain fit` with this config first")
    config, model, optimizer = rebuild(config, meta)
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
        shapes_match = stored.get(keys[0]) == list(variable.shape) and stored.get(keys[2]) == shape[:1]
        if any(k not in stored for k in keys) or not shapes_match:
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
    """Where the run averaged its weights (`train.average`, lmtrain.fit.averaging) and had begun to,
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
