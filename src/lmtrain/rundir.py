"""What a run directory holds: its config (and the run's start it is checked against), the
checkpoint layout, restoring with the shapes checked, and the TensorBoard scalars.

A training checkpoint (`training_checkpoint`) holds everything an exact resume needs: the
weights, the dropout generators' states, the optimizer slots and step, the tf.data iterator, the
loop's counters and the validation record. `lmtrain.use.load.load_run` reads the same checkpoint
for inference, through `weights_checkpoint` and `restore` here, so the two cannot drift apart.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
import yaml

from lmtrain.bundle import DamagedCheckpoint
from lmtrain.config.files import config_from_dict, save_config
from lmtrain.config.schema import Config
from lmtrain.errors import LmtrainError, first_line
from lmtrain.model import LanguageModel
from lmtrain.paths import DataPaths, RunPaths, write_atomic


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
        changed = [s for s in ("data", "tokenizer", "model") if _compared(old.get(s)) != _compared(new[s])]
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


def _compared(section: Any) -> Any:
    """A config section as a resumed run must match it: the LSTM implementation may differ (both
    compute the same function with the same weights; the machine decides `auto`)."""
    return {k: v for k, v in section.items() if k != "lstm_impl"} if isinstance(section, dict) else section


# ---- the two checkpoint layouts ---------------------------------------------------------------

def training_checkpoint(model: LanguageModel, optimizer: keras.optimizers.Optimizer, **loop: Any
                        ) -> tf.train.Checkpoint:
    """What `fit` saves and resumes from: the weights, the dropout generators' states, the
    optimizer, and the loop's own state (`loop`: the data iterator, counters, validation)."""
    return tf.train.Checkpoint(model=weights_checkpoint(model), rng=_rng_states(model), optimizer=optimizer, **loop)


def restore(checkpoint: tf.train.Checkpoint, path: str, model: LanguageModel, partial: bool = False) -> None:
    """Restore a checkpoint, first checking that every model weight is there with its shape."""
    check_weights(path, model)
    try:
        status = checkpoint.read(path)  # the counterpart of CheckpointStore.save's write()
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as exc:
        raise LmtrainError(f"checkpoint {path} does not match this run: {first_line(exc)}") from None


def check_weights(path: str, model: LanguageModel) -> dict[str, list[int]]:
    """Every model weight is in checkpoint `path` with its shape (else the error names the first
    that is not); returns what the checkpoint stores (key -> shape)."""
    try:
        stored = dict(tf.train.list_variables(path))
    except (tf.errors.OpError, ValueError) as exc:
        raise DamagedCheckpoint(f"checkpoint {path} is unreadable ({type(exc).__name__}); "
                                f"remove it or fit with --force") from None
    for v in model.weights:
        key = weight_key(v)
        if key not in stored:
            raise LmtrainError(f"checkpoint {path} has no weight {v.path}: it was written for another model config")
        if list(stored[key]) != list(v.shape):
            raise LmtrainError(
                f"checkpoint {path}: weight {v.path} has shape {list(stored[key])} but the config "
                f"(model.* / tokenizer.vocab_size) gives {list(v.shape)}"
            )
    return stored


def weights_checkpoint(model: LanguageModel) -> tf.train.Checkpoint:
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
