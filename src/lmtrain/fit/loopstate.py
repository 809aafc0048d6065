"""What the fit loop keeps between steps and checkpoints with itself: the LSTM state carried from
window to window under `train.stateful`, and the validation record (best perplexity, plateau rate
cuts, early stopping), so both count the same across a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from lmtrain.config.schema import TrainConfig
from lmtrain.model import LanguageModel, State


class StateCarry:
    """The LSTM state between windows under `train.stateful`: zeros at each epoch start, else
    the state the previous step ended with. Kept in variables at checkpoints, so a resumed run
    starts its next window from the same state."""

    def __init__(self, model: LanguageModel, batch_size: int, steps_per_epoch: int) -> None:
        self._zeros = model.zero_state(batch_size)
        self._steps_per_epoch = steps_per_epoch
        self._state = self._zeros
        self._vars = tuple(tf.Variable(z, trainable=False) for z in self._zeros)

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(h=self._vars[0], c=self._vars[1])

    def restored(self) -> None:
        self._state = tuple(tf.identity(v) for v in self._vars)

    def before(self, step: int) -> State:
        """The state to start step `step` (0-based count of steps done) from."""
        return self._zeros if step % self._steps_per_epoch == 0 else self._state

    def after(self, state: State) -> None:
        self._state = state

    def store(self) -> None:
        for var, value in zip(self._vars, self._state):
            var.assign(value)


@dataclass(frozen=True)
class Verdict:
    """What one validation decides."""

    improved: bool  # the best perplexity so far
    lower_rate: bool  # train.schedule=plateau: no gain in plateau_patience validations
    stop: bool  # train.patience: no gain in that many validations


class ValidationRecord:
    """What the loop remembers of its validations and what they decide: the best perplexity,
    the plateau rate cuts and early stopping. Checkpointed with the loop, so they count the
    same across a resume."""

    def __init__(self, config: TrainConfig) -> None:
        self._patience = config.patience
        self._plateau_patience = config.plateau_patience if config.schedule == "plateau" else None
        self._best = tf.Variable(math.inf, dtype=tf.float64, trainable=False)
        self._best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self._since_best = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._since_reduce = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._stopped = tf.Variable(False, trainable=False)

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(best=self._best, best_step=self._best_step, since_best=self._since_best,
                                   since_reduce=self._since_reduce, stopped=self._stopped)

    def record(self, step: int, ppl: float) -> Verdict:
        """Note a validation perplexity and decide what follows from it."""
        if ppl < float(self._best):
            self._best.assign(ppl)
            self._best_step.assign(step)
            self._since_best.assign(0)
            self._since_reduce.assign(0)
            return Verdict(improved=True, lower_rate=False, stop=False)
        self._since_best.assign_add(1)
        self._since_reduce.assign_add(1)
        lower = self._plateau_patience is not None and int(self._since_reduce) >= self._plateau_patience
        if lower:
            self._since_reduce.assign(0)
        stop = bool(self._patience) and int(self._since_best) >= self._patience
        if stop:
            self._stopped.assign(True)
        return Verdict(improved=False, lower_rate=lower, stop=stop)

    @property
    def stopped(self) -> bool:
        return bool(self._stopped)

    @property
    def best_step(self) -> int | None:
        return int(self._best_step) if int(self._best_step) >= 0 else None

    @property
    def best_perplexity(self) -> float | None:
        return float(self._best) if self.best_step is not None else None

    def summary(self) -> str:
        return (f"no better validation perplexity in {self._patience} validation(s); the best, "
                f"{self.best_perplexity:.2f} "
                f"at step {self.best_step}, is kept in checkpoints/best and used by eval, generate and export")
