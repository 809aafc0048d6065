"""The choices a config leaves open that depend on the model's width and the run's length: the
default learning rate, whether a run is short (untied, at a constant rate) or long (tied, warm-up
+ cosine), and `for_run`, which makes those choices for a run so every verb builds the same model.

Plain Python, no TensorFlow: the config's schema asks here when it resolves a null key.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmtrain.config import Config

# The default learning rate: REFERENCE_RATE at REFERENCE_WIDTH LSTM units, scaled by the square
# root of REFERENCE_WIDTH / hidden_dim, at most MAX_DEFAULT_RATE (see lmtrain.runlength.default_learning_rate).
REFERENCE_RATE, REFERENCE_WIDTH, MAX_DEFAULT_RATE = 0.01, 512, 0.02
# A run is short (untied, at a constant rate, by default) below SHORT_RUN_STEPS optimizer steps
# at REFERENCE_WIDTH LSTM units, times (REFERENCE_WIDTH / hidden_dim) ** SHORT_RUN_EXPONENT.
SHORT_RUN_STEPS, SHORT_RUN_EXPONENT = 650, 0.25


def default_learning_rate(hidden_dim: int) -> float:
    """Adam's rate when train.learning_rate is null: 0.01 at 512 LSTM units, times
    sqrt(512 / hidden_dim), at most 0.02.

    Why it depends on the width: Adam moves every weight by about the rate, so the change of a
    unit's input grows with its fan-in, and a wider LSTM wants a smaller rate (muP's argument).
    On the grid of benchmarks/grid.py (results in benchmarks/results/), the best constant rate
    was 0.02 at 128 units and 0.01 at 512 and 1,024, and the old fixed 0.004 was 3-44% worse than
    this rule at every point of 1,000 steps or more.
    """
    rate = REFERENCE_RATE * math.sqrt(REFERENCE_WIDTH / int(hidden_dim))
    return float(min(MAX_DEFAULT_RATE, float(f"{rate:.2g}")))


def short_run_steps(hidden_dim: int) -> int:
    """The run length from which a model of `hidden_dim` LSTM units is trained tied, with warm-up
    + cosine, where the config leaves it open: 650 steps at 512 units, times (512 / hidden_dim)
    to the 1/4 (920 at 128 units, 550 at 1,024), to 10 steps.

    Why one recipe cannot serve both lengths: on benchmarks/grid.py's grid (demo corpus), an
    untied model at a constant rate was the best run at every width up to 300 steps (28-50%
    better than tied + cosine at 150; the model is still learning fast, and both the decay and
    the shared matrix slow it down), and tied + cosine the best from 1,000 steps on (4-16% better
    than untied + constant). The two met at about 930 steps at 128 units, 650 at 512 and between
    300 and 600 at 1,024: a wider model gets there sooner. The 1/4 power is fitted to the first
    two crossings (benchmarks/results/short-runs-2026-12-03.md).
    """
    steps = SHORT_RUN_STEPS * (REFERENCE_WIDTH / int(hidden_dim)) ** SHORT_RUN_EXPONENT
    return int(round(steps, -1))


def short_run(total_steps: int, hidden_dim: int) -> bool:
    """Whether a run of `total_steps` optimizer steps is short for `hidden_dim` LSTM units: one
    that, where model.tie_weights and train.schedule are null, trains untied at a constant rate
    (see `short_run_steps`)."""
    return int(total_steps) < short_run_steps(hidden_dim)


def for_run(config: Config, total_steps: int, started: Config | None = None) -> Config:
    """`config` with the choices it leaves to the run made for a run of `total_steps` steps:
    model.tie_weights and train.schedule where they are null (see `short_run`).

    `started`: the config saved by the run when it first started (its run directory). Its
    choices are kept, so a run resumed with a longer max_steps keeps its architecture and
    schedule. Idempotent: a config with nothing left open comes back unchanged.
    """
    m, t = config.model, config.train
    if started is not None:
        m = m if m.tie_weights is not None else dataclasses.replace(m, tie_weights=started.model.tie_weights)
        t = t if t.schedule is not None else dataclasses.replace(t, schedule=started.train.schedule)
    return dataclasses.replace(config, model=dataclasses.replace(m, tie_weights=m.ties(total_steps)),
                               train=dataclasses.replace(t, schedule=t.schedule_for(total_steps, m.hidden_dim)))
