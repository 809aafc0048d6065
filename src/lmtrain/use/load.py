"""A trained run read back for inference: `load_run` rebuilds the model `fit` trained from a run
directory alone (config, tokenizer, meta, checkpoint), for `eval`, `generate`, `export`,
`eval --per-line` and `lmtrain.load`.

It reads the weights and step from the training checkpoint (`lmtrain.rundir`'s layout), the
large matrices a block of rows at a time into their variables, and of the optimizer only what
LazyAdam's pending steps need, also a block at a time, so inference never holds a weight twice
or the optimizer slots at all; where the run averaged its weights, the mean is put
in place. Nothing here imports the trainer (`lmtrain.fit.loop`, `lmtrain.fit.distribute`) or `prepare`:
scoring and generating do not pay for them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
import yaml

from lmtrain.build import rebuild
from lmtrain.bundle import DamagedCheckpoint, StoredTensor, stored_tensors
from lmtrain.checkpoints import CheckpointStore
from lmtrain.config.files import config_from_dict
from lmtrain.config.schema import Config
from lmtrain.data.meta import DataMeta, load_meta
from lmtrain.data.tokenizer import Tokenizer
from lmtrain.errors import CheckpointWarning, LmtrainError, first_line
from lmtrain.keras.optim import LazyAdam, lazy_adam_of
from lmtrain.model import LanguageModel
from lmtrain.paths import RunPaths
from lmtrain.rundir import check_weights, weight_key

# Rows of a stored [V, D] tensor read at once: its weights, its LazyAdam slots, its average.
BLOCK_ROWS = 4096
# Times the checkpoints are listed again when the one being read is pruned under the reader.
LOOKUPS = 5


@dataclass
class TrainedRun:
    """Everything `eval` and `generate` need, rebuilt from the run directory alone."""

    config: Config
    meta: DataMeta
    tokenizer: Tokenizer
    model: LanguageModel
    step: int


def _read_counters(path: str, optimizer: keras.optimizers.Optimizer, step: tf.Variable) -> None:
    """The step and an optimizer that is never built, so only its step counter and learning rate
    are read (its slots are not)."""
    try:
        tf.train.Checkpoint(optimizer=optimizer, step=step).read(path).expect_partial()
    except (ValueError, AssertionError, tf.errors.OpError) as exc:
        raise LmtrainError(f"checkpoint {path} does not match this run: {first_line(exc)}") from None


def _fill(variable: keras.Variable, stored: StoredTensor) -> None:
    """`variable` := a stored tensor. A [V, D] matrix (more rows than a block) is written in
    place a block of rows at a time, so it is never held twice (TensorFlow's restore reads every
    tensor before it assigns any). The scatter makes TensorFlow copy the variable on a whole read
    from then on; scoring only gathers rows of it (`lmtrain.keras.softmax`)."""
    if len(variable.shape) < 2 or variable.shape[0] <= BLOCK_ROWS:
        variable.assign(stored.read().reshape(variable.shape))
        return
    for lo, rows in stored.blocks(BLOCK_ROWS):
        variable.value.scatter_update(tf.IndexedSlices(tf.constant(rows), tf.range(lo, lo + len(rows))))


def load_run(run_dir: Path) -> TrainedRun:
    """Rebuild the trained model from a run directory (config, tokenizer, meta, checkpoint).

    The checkpoint is the best one where early stopping kept one (train.patience), else the
    latest. A damaged one (a checksum that does not match) is passed over, with a
    `CheckpointWarning`, for the newest intact one; one pruned by a `fit` writing beside this
    reader while it is read is looked up again. A reader renames nothing: the writer does that.
    """
    run = RunPaths(run_dir)
    if not run.config.is_file():
        raise LmtrainError(f"no trained run in {run.root}: run `lmtrain fit` with this config first")
    config = config_from_dict(yaml.safe_load(run.config.read_text()))
    meta = load_meta(run.meta)
    config, model, optimizer = rebuild(config, meta)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    for _ in range(LOOKUPS):
        candidates = (CheckpointStore(run.best_checkpoints, keep=1).newest_first()
                      + CheckpointStore(run.checkpoints, config.train.keep_checkpoints).newest_first())
        if not candidates:
            raise LmtrainError(f"no checkpoint in {run.checkpoints}: run `lmtrain fit` with this config first")
        for path in candidates:
            try:
                _read_checkpoint(path, model, optimizer, step)
                return TrainedRun(config, meta, Tokenizer(run.tokenizer), model, int(step.numpy()))
            except DamagedCheckpoint as exc:
                warnings.warn(f"{exc}; it is passed over for the checkpoint before it", CheckpointWarning,
                              stacklevel=2)
            except _Gone:
                break  # pruned while read: list the checkpoints again
    raise LmtrainError(f"the checkpoints in {run.checkpoints} kept changing while read, or none is intact")


def _read_checkpoint(path: str, model: LanguageModel, optimizer: keras.optimizers.Optimizer, step: tf.Variable
                     ) -> None:
    """The weights (LazyAdam's pending steps applied, or the average where the run averaged) and
    the step of checkpoint `path`, into `model` and `step`."""
    if not Path(path).parent.is_dir():
        raise _Gone()
    try:
        check_weights(path, model)
        tensors = stored_tensors(path)
        for variable in model.weights:
            _fill(variable, tensors[weight_key(variable)])
        _read_counters(path, optimizer, step)
        lazy = lazy_adam_of(optimizer)
        if lazy is not None:
            prefix = "optimizer/" if lazy is optimizer else "optimizer/inner_optimizer/"
            _apply_pending_from(path, tensors, prefix, lazy, model.trainable_variables)
        _apply_average_from(path, tensors, model.trainable_variables)
    except (OSError, LmtrainError):
        if not Path(path).parent.is_dir():  # a fit pruned it as it was read
            raise _Gone() from None
        raise


class _Gone(Exception):
    """The checkpoint being read was removed (pruned by a fit writing beside the reader)."""


def _apply_pending_from(path: str, tensors: dict[str, StoredTensor], prefix: str, optimizer: LazyAdam,
                        variables: list[Any]) -> None:
    """Give every row the momentum steps it skipped (see optim.LazyAdam), reading the optimizer
    slots from checkpoint `path` one block of rows at a time (never whole V x D slots)."""
    for index, variable in enumerate(variables):
        slots = [tensors.get(f"{prefix}_variables/{p}/.ATTRIBUTES/VARIABLE_VALUE")
                 for p in optimizer.slot_positions(index, len(variables))]
        shape = tuple(variable.shape) or (1,)
        if None in slots or slots[0].shape != tuple(variable.shape) or slots[2].shape != shape[:1]:
            raise LmtrainError(f"checkpoint {path}: its optimizer state does not match the model "
                               f"(no slots for {variable.path}); it was written for another config")
        for (lo, m), (_, v), (_, last) in zip(*(slot.blocks(BLOCK_ROWS) for slot in slots)):
            owed, _, _ = optimizer.owed(m.reshape(-1, *shape[1:]), v.reshape(-1, *shape[1:]), last)
            if not bool(tf.reduce_any(owed != 0)):  # rows the last step touched (every row of a dense weight)
                continue
            if len(variable.shape) == 0:
                variable.assign_sub(tf.reshape(owed, []))
            else:  # in place, a block of rows at a time: never a second copy of a [V, D] matrix
                variable.value.scatter_sub(tf.IndexedSlices(owed, tf.range(lo, lo + len(m))))


def _apply_average_from(path: str, tensors: dict[str, StoredTensor], variables: list[Any]) -> None:
    """Where the run averaged its weights (`train.average`, lmtrain.fit.averaging) and had begun to,
    put the mean in place of the trained weights: it is what validation scored."""
    key = "average/{}/.ATTRIBUTES/VARIABLE_VALUE"
    active, count = tensors.get(key.format("active")), tensors.get(key.format("count"))
    if active is None or count is None or not bool(active.read()) or int(count.read()) == 0:
        return  # no averaging, not begun, or begun and nothing folded yet
    for i, variable in enumerate(variables):
        mean = tensors.get(key.format(f"mean_{i}"))
        if mean is None or mean.shape != tuple(variable.shape):
            raise LmtrainError(f"checkpoint {path}: its averaged weights do not match the model "
                               f"(no mean for {variable.path}); it was written for another config")
        _fill(variable, mean)
