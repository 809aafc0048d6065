"""The rules behind the choices a config leaves open, as numbers in and numbers out: the default
learning rate for a width, whether a run is short (untied, at a constant rate) or long (tied,
warm-up + cosine), a model's parameter count, a run's exposure and how strongly it regularises.

Plain Python, no TensorFlow and no config: `lmtrain.config.schema` asks here for a null key's value, and
`lmtrain.config.resolve` applies the rules to a whole config once per run.
"""

from __future__ import annotations

import math
from typing import Any

# The default learning rate: REFERENCE_RATE at REFERENCE_WIDTH LSTM units, scaled by the square
# root of REFERENCE_WIDTH / hidden_dim, at most MAX_DEFAULT_RATE (see default_learning_rate).
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


# The warm-up of warmup_cosine and warmup_stable_decay: this share of the run's steps (the
# library's `warmup_cosine` defaults to the same share); SGD's warm-up at a constant or plateau
# rate: SGD_WARMUP_STEPS steps, at most that share (see `sgd_warmup_steps`).
WARMUP_SHARE, SGD_WARMUP_STEPS = 0.05, 100


def warmup_share_steps(total_steps: int) -> int:
    """The warm-up of the warm-up schedules where train.warmup_steps is null: 5% of the run's
    steps (50 of the demo's 1,000), fewer than the run."""
    return min(int(round(WARMUP_SHARE * int(total_steps))), max(int(total_steps) - 1, 0))


def sgd_warmup_steps(total_steps: int) -> int:
    """The steps over which SGD's constant (or plateau) rate rises from 0 where
    train.warmup_steps is null: 100, at most 5% of the run.

    Why: plain SGD at the classic PTB rate (20, clipped at 0.25) moves the weights by 5 in norm
    every early step, whatever the gradient. On Penn Treebank medium with AWD-LSTM's
    regularisers that start closed the last LSTM layer's output gates for good in one seed of
    six (step 40; the model stayed the unigram model for two epochs), while 100 steps of warm-up
    kept every seed measured training (benchmarks/results/ptb-medium-start-2026-12-07.md). Adam
    needs none: it moves each weight by about its rate.
    """
    return min(SGD_WARMUP_STEPS, int(round(WARMUP_SHARE * int(total_steps))))


# The regularisation rule (see `regularisation`): the light setting in runs of under MIN_PASSES
# passes over the training split or up to LIGHT_EXPOSURE, AWD-LSTM's strength from
# STRONG_EXPOSURE, in between in proportion to the log of the exposure.
MIN_PASSES, LIGHT_EXPOSURE, STRONG_EXPOSURE = 2.0, 5.0, 100.0
# The model.* keys the rule sets where they are null, with their light (every run before the
# rule) and strong (AWD-LSTM's, Merity et al. 2017) values.
REGULARISATION_KEYS = ("dropout", "weight_drop", "word_dropout", "ar", "tar", "locked_dropout")
LIGHT = {"dropout": 0.1, "weight_drop": 0.0, "word_dropout": 0.0, "ar": 0.0, "tar": 0.0, "locked_dropout": False}
STRONG = {"dropout": 0.5, "weight_drop": 0.5, "word_dropout": 0.1, "ar": 2.0, "tar": 1.0, "locked_dropout": True}


def parameter_count(embedding_dim: int, hidden_dim: int, num_layers: int, vocab_size: int, tied: bool,
                    projection_dim: int | None, proj_size: int | None = None) -> int:
    """Trainable parameters of lmtrain's model: embedding, LSTM layers (with their recurrent
    projection, `proj_size`), projection, output layer."""
    width = proj_size or hidden_dim  # each LSTM layer's output and fed-back state
    if tied and projection_dim is None and width != embedding_dim:
        projection_dim = embedding_dim  # tying projects a wider LSTM's output to the embedding width
    output_dim = projection_dim or width
    lstm = sum(4 * hidden_dim * ((embedding_dim if i == 0 else width) + width + 1) + (hidden_dim * proj_size
               if proj_size else 0) for i in range(num_layers))
    projection = width * projection_dim if projection_dim else 0
    return vocab_size * embedding_dim + lstm + projection + (0 if tied else vocab_size * output_dim) + vocab_size


def exposure(seen_tokens: float, train_tokens: float, parameters: int) -> float:
    """How hard a run can overfit: the passes it makes over its training split times the
    parameters per training token (seen x parameters / train tokens squared). The demo's 1,000
    steps are 5.1 (1.7 passes x 2.9); ten epochs of the default model over Penn Treebank 46; ten
    epochs of it over a 600 KB book 250."""
    return float(seen_tokens) * parameters / max(float(train_tokens), 1.0) ** 2


def regularisation(exposure_: float, passes: float) -> dict[str, Any]:
    """The model.* regularisation keys where they are null: `LIGHT` (dropout 0.1 per token,
    nothing else) in a run of under two passes over its training split or up to an exposure of
    5, `STRONG` (AWD-LSTM's: locked dropout 0.5, weight drop 0.5, word dropout 0.1, AR 2, TAR 1)
    from 100, and between them each number in proportion to the log of the exposure, with
    locked masks.

    Why the run's exposure decides it: a model that sees its data once cannot memorise it, and
    dropout only slows it down; one that sees a small corpus many times memorises it, and the
    validation perplexity runs away after a few epochs (a 600 KB book, the default model, ten
    epochs: best 94.8 at epoch 3, 748 at epoch 10 with the light setting; 85.1 at epoch 10 and
    still falling with the strong one). Why runs of under two passes stay light: every earlier
    default was tuned and checked there (benchmarks/grid.py: 150 to 3,000 steps of the demo
    corpus, at most 1.7 passes at the widths that overfit), with dropout 0.1. The measurements:
    benchmarks/results/regularisation-2026-12-05.md.
    """
    if passes < MIN_PASSES or exposure_ <= LIGHT_EXPOSURE:
        return dict(LIGHT)
    share = min(1.0, math.log(exposure_ / LIGHT_EXPOSURE) / math.log(STRONG_EXPOSURE / LIGHT_EXPOSURE))
    values: dict[str, Any] = {k: round(LIGHT[k] + share * (STRONG[k] - LIGHT[k]), 2)
                              for k in REGULARISATION_KEYS if k != "locked_dropout"}
    values["locked_dropout"] = True
    return values
